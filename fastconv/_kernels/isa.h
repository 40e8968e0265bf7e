/* CPU dispatch shared by the kernels built per instruction set (setup.py's ISA_FLAGS). */
#ifndef FC_ISA_H
#define FC_ISA_H

/* Instruction set this translation unit was compiled for:
 * 0 portable baseline, 1 AVX + FMA, 2 AVX-512F (+ FMA). */
static int fc_compiled_isa(void)
{
#if defined(__AVX512F__) && defined(__FMA__)
    return 2;
#elif defined(__AVX__) && defined(__FMA__)
    return 1;
#else
    return 0;
#endif
}

/* The highest of those levels the running CPU (and OS) executes. */
static int fc_cpu_isa(void)
{
#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx") || !__builtin_cpu_supports("fma"))
        return 0;
    return __builtin_cpu_supports("avx512f") ? 2 : 1;
#else
    return 0;
#endif
}

#endif
