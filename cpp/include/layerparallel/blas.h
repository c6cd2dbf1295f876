// The one include of the BLAS (CMakeLists.txt chooses it: the scipy-openblas32
// wheel from PyPI, a system OpenBLAS or MKL, or none). The wheel's symbols carry
// a prefix (scipy_cblas_dgemm); LP_BLAS(name) spells a function for every choice.
#pragma once

#if defined(LP_WITH_BLAS)
#if __has_include(<cblas.h>)
#include <cblas.h>
#else
#include <mkl_cblas.h>
#endif

#define LP_BLAS_CAT2(a, b) a##b
#define LP_BLAS_CAT(a, b) LP_BLAS_CAT2(a, b)
#if defined(LP_BLAS_PREFIX)
#define LP_BLAS(name) LP_BLAS_CAT(LP_BLAS_PREFIX, name)
#else
#define LP_BLAS(name) name
#endif
#endif
