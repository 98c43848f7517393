"""loadtest stage."""
