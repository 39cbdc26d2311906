// A CUPTI injection library: the GPU timeline of any CUDA program, without
// Nsight Systems (the GPU machines have no nsys and no perf). The CUDA driver
// loads it at cuInit when CUDA_INJECTION64_PATH names it, so neither Hearth nor
// Python mlx-lm needs a change. It writes one line per kernel (GPU start/end in
// ns, CUPTI's clock, which is the host's) and, with KTRACE_API=1, one per
// driver and runtime API call (host start/end), to $KTRACE_OUT; at exit the API
// callback ids get their names. scripts/gpu/kernel_trace.py reads the file.
//
// Build (on the GPU machine, where CUDA's headers are):
//   gcc -O2 -shared -fPIC -o /tmp/kernel_trace.so scripts/gpu/kernel_trace.c
//     -I/usr/local/cuda/include -I"$CUPTI"/include -L"$CUPTI"/lib -lcupti
#include <cupti.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static FILE *out;
// Callback ids seen, to name them once at exit (ids are small integers).
static unsigned char seen_driver[4096], seen_runtime[4096];

static void CUPTIAPI buffer_requested(uint8_t **buffer, size_t *size, size_t *max_records) {
  *size = 16u << 20;
  *buffer = aligned_alloc(8, *size);
  *max_records = 0;
}

static void CUPTIAPI buffer_completed(CUcontext ctx, uint32_t stream, uint8_t *buffer, size_t size,
                                      size_t valid) {
  (void)ctx; (void)stream; (void)size;
  CUpti_Activity *record = NULL;
  while (cuptiActivityGetNextRecord(buffer, valid, &record) == CUPTI_SUCCESS) {
    switch (record->kind) {
      case CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL: {
        CUpti_ActivityKernel10 *k = (CUpti_ActivityKernel10 *)record;
        fprintf(out, "K %llu %llu %u %u %s\n", (unsigned long long)k->start,
                (unsigned long long)k->end, k->streamId, k->correlationId,
                k->name ? k->name : "?");
        break;
      }
      case CUPTI_ACTIVITY_KIND_DRIVER:
      case CUPTI_ACTIVITY_KIND_RUNTIME: {
        CUpti_ActivityAPI *a = (CUpti_ActivityAPI *)record;
        int driver = record->kind == CUPTI_ACTIVITY_KIND_DRIVER;
        if (a->cbid < 4096) (driver ? seen_driver : seen_runtime)[a->cbid] = 1;
        fprintf(out, "%c %llu %llu %u %u %u\n", driver ? 'D' : 'R',
                (unsigned long long)a->start, (unsigned long long)a->end, a->cbid,
                a->threadId, a->correlationId);
        break;
      }
      default:
        break;
    }
  }
  free(buffer);
}

static void finish(void) {
  cuptiActivityFlushAll(1);
  for (unsigned i = 0; i < 4096; i++) {
    const char *name = NULL;
    if (seen_driver[i] && cuptiGetCallbackName(CUPTI_CB_DOMAIN_DRIVER_API, i, &name) == CUPTI_SUCCESS)
      fprintf(out, "N D %u %s\n", i, name);
    if (seen_runtime[i] && cuptiGetCallbackName(CUPTI_CB_DOMAIN_RUNTIME_API, i, &name) == CUPTI_SUCCESS)
      fprintf(out, "N R %u %s\n", i, name);
  }
  fclose(out);
}

int InitializeInjection(void) {
  const char *path = getenv("KTRACE_OUT");
  out = fopen(path ? path : "/tmp/kernel_trace.txt", "w");
  if (!out) return 0;
  setvbuf(out, NULL, _IOFBF, 1 << 20);
  const int api = getenv("KTRACE_API") && strcmp(getenv("KTRACE_API"), "1") == 0;
  CUptiResult r = cuptiActivityRegisterCallbacks(buffer_requested, buffer_completed);
  if (r == CUPTI_SUCCESS) r = cuptiActivityEnable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL);
  if (r == CUPTI_SUCCESS && api) r = cuptiActivityEnable(CUPTI_ACTIVITY_KIND_DRIVER);
  if (r == CUPTI_SUCCESS && api) r = cuptiActivityEnable(CUPTI_ACTIVITY_KIND_RUNTIME);
  if (r != CUPTI_SUCCESS) {
    const char *msg = NULL;
    cuptiGetResultString(r, &msg);
    fprintf(stderr, "kernel_trace: CUPTI failed: %s\n", msg ? msg : "?");
    return 0;
  }
  atexit(finish);
  return 1;
}
