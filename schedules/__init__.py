"""Schedule definitions run by periodiq (one module per schedule family)."""
