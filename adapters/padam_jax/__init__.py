"""padam_jax: Padam for jax (see the padam_jax issue; not implemented yet)."""
