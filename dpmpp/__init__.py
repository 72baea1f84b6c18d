"""DPM++: dynamic masked metric learning for occluded person re-identification."""

__version__ = "0.1.0"
