"""Input preparation: SMAP L4 and ISMN import, spectral indices, gap filling, S1 compositing."""
