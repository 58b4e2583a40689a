"""The patch registry: state, registration, field returns and rates."""
