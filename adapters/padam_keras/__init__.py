"""padam_keras: Padam for keras (see the padam_keras issue; not implemented yet)."""
