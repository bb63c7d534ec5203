// Entry point of ringmail-microbench (the root's benchmark_dep is plain
// libbenchmark, without benchmark_main).
#include <benchmark/benchmark.h>

BENCHMARK_MAIN();
