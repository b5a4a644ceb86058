"""The programs built on the library: the ``im2colnet`` command (cli), its demo and bench,
and the PyTorch peer the bench runs in a process of its own."""
