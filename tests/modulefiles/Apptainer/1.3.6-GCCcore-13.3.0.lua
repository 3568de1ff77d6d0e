-- TEST DOUBLE of MeluXina's Apptainer module, for Lmod: puts the Apptainer test double (tests/doubles)
-- first on PATH, as the real module puts the real apptainer there.
whatis("Apptainer 1.3.6 (the test double in tests/doubles)")
local tests = myFileName():match("^(.*)/modulefiles/")
prepend_path("PATH", pathJoin(tests, "doubles"))
