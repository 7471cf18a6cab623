"""Command-line entry points of the psann library."""
