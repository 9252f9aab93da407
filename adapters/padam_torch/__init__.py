"""padam_torch: Padam for torch (see the padam_torch issue; not implemented yet)."""
