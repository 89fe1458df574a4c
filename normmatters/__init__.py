"""normmatters: reproduction of Hoffer et al. 2018, "Norm matters"."""
