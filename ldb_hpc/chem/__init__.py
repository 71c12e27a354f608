"""Residue vocabulary, atom14 layout, bonds, χ definitions and measured ideal geometry."""
