"""Fundus photographs: validated loading, field of view, preprocessing, synthetic images, data sets."""
