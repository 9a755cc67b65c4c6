"""ctsp — continuous-time signal propagation (sigprop) simulator."""

__version__ = "0.1.0"
