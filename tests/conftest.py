import os

# The Triton interpreter runs kernels on the CPU; it must be chosen before triton is first imported.
os.environ.setdefault("TRITON_INTERPRET", "1")
