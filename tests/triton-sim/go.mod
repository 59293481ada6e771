module triton-sim

go 1.19
