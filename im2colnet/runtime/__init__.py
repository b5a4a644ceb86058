"""How our kernels and products use the machine: NumPy's BLAS, our OpenMP threads, malloc.

    blas     finding NumPy's OpenBLAS; its thread count around small products
    gemm     matrix products on our own OpenMP threads (np.matmul as the fallback)
    threads  how many threads our kernels use, and when a kernel is worth them
    malloc   glibc's malloc settings for training loops
"""
