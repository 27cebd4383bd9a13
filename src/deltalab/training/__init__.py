"""Student training through TRL: reference log-prob reuse, trainer construction, curve logging."""
