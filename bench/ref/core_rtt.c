/* Placement probe: the round trip of one cache line between two cores.
 *
 * Two threads, pinned to the two cores given, hand a counter back and forth
 * through one shared cache line; it prints the mean nanoseconds per round
 * trip. On this benchmark's VMs the figure has two levels (about 50 and about
 * 350 ns on the 2-vCPU EPYC machines) as the hypervisor moves the two vCPUs
 * closer or further apart, and a loopback request's kernel cost moves with it
 * (the skb crosses from one core to the other and back): every server's CPU
 * per request is higher in the far placement. run.py records it before and
 * after each run so that runs are compared within one placement.
 * The trips are timed in five batches and the fastest batch is printed: a
 * batch during which another thread on one of the cores (a server's
 * housekeeping) preempted a spinning side reads high.
 * Usage: core_rtt CORE_A CORE_B [ROUND_TRIPS] (default 50000).
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static _Atomic long line __attribute__((aligned(64)));
static long trips;

#define BATCHES 5

static int pin(int core)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(core, &set);
    return pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

static void *answer(void *arg)
{
    if (pin(*(int *)arg) != 0)
        exit(2);
    for (long i = 0; i < trips; i++) {
        while (atomic_load_explicit(&line, memory_order_acquire) != 2 * i + 1)
            ;
        atomic_store_explicit(&line, 2 * i + 2, memory_order_release);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: core_rtt CORE_A CORE_B [ROUND_TRIPS]\n");
        return 2;
    }
    int a = atoi(argv[1]), b = atoi(argv[2]);
    trips = argc > 3 ? atol(argv[3]) : 50000;
    if (trips <= 0)
        return 2;
    pthread_t other;
    if (pthread_create(&other, NULL, answer, &b) != 0 || pin(a) != 0)
        return 2;
    long batch = trips / BATCHES > 0 ? trips / BATCHES : 1;
    double best = -1;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (long i = 0; i < trips; i++) {
        atomic_store_explicit(&line, 2 * i + 1, memory_order_release);
        while (atomic_load_explicit(&line, memory_order_acquire) != 2 * i + 2)
            ;
        if ((i + 1) % batch == 0 || i + 1 == trips) {
            clock_gettime(CLOCK_MONOTONIC, &t1);
            long n = (i + 1) % batch == 0 ? batch : (i + 1) % batch;
            double ns = ((t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec)) / n;
            if (best < 0 || ns < best)
                best = ns;
            t0 = t1;
        }
    }
    pthread_join(other, NULL);
    printf("%.1f\n", best);
    return 0;
}
