-- TEST DOUBLE of MeluXina's software stage module (env/release/2024.1), for Lmod: loads nothing, exists so
-- that the MeluXina profile's 'module load' line succeeds in jobs on the MeluXina-shaped test cluster.
whatis("MeluXina software stage 2024.1 (test double)")
