"""The training core shared by every stage."""
