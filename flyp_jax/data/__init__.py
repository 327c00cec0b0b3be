"""Datasets: TFDS pipelines, preprocessing, evaluation suites, class names, templates and builders."""
