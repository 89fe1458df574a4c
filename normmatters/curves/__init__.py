"""What the run tables say, as curves: read by the claims (experiments/) and drawn by the figures
(plots/), so neither reaches into the other. Reads only logged tables, never a model or the data."""
