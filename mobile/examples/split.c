/* Embeds a text split with `edgecut serve` through edgecut's C ABI: the device runs the first
 * CUT stages, the server the rest. When the server is gone, the text is embedded on the device
 * and the example says so. It also embeds the text locally and prints the largest difference.
 *
 *   cc -I mobile/include mobile/examples/split.c target/release/libedgecut_mobile.a -lm -lpthread -ldl -o split
 *   edgecut serve -m all-MiniLM-L6-v2.q8_0.gguf --listen 127.0.0.1:7070 &
 *   ./split all-MiniLM-L6-v2.q8_0.gguf 127.0.0.1:7070 3 f32 "A man is eating food."
 *
 * Prints "split" or "fell back: REASON", then "max |split - local| = X".
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edgecut.h"

static int fail(const char *what, EdgecutStatus s) {
    fprintf(stderr, "%s failed (status %d): %s\n", what, (int)s, edgecut_last_error());
    return 1;
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: %s MODEL.gguf HOST:PORT CUT int8|f16|f32 TEXT\n", argv[0]);
        return 2;
    }
    EdgecutModel model = 0;
    EdgecutStatus s = edgecut_model_open(argv[1], NULL, &model);
    if (s != EDGECUT_STATUS_OK) return fail("edgecut_model_open", s);

    EdgecutSplitOptions opts;
    memset(&opts, 0, sizeof opts);
    opts.server = argv[2];
    opts.cut = (uint32_t)atoi(argv[3]);
    opts.encoding = strcmp(argv[4], "f32") == 0 ? 2 : strcmp(argv[4], "f16") == 0 ? 1 : 0;
    opts.timeout_ms = 5000;
    EdgecutSplit split = 0;
    s = edgecut_split_open(model, &opts, &split);
    if (s != EDGECUT_STATUS_OK) return fail("edgecut_split_open", s);

    size_t dim = 0;
    s = edgecut_embedding_dim(model, &dim);
    if (s != EDGECUT_STATUS_OK) return fail("edgecut_embedding_dim", s);
    float *remote = malloc(dim * sizeof(float));
    float *local = malloc(dim * sizeof(float));
    if (!remote || !local) return 1;
    uint8_t fell_back = 0;
    s = edgecut_split_embed(split, argv[5], remote, dim, NULL, &fell_back);
    if (s != EDGECUT_STATUS_OK) return fail("edgecut_split_embed", s);
    if (fell_back) {
        printf("fell back: %s\n", edgecut_last_error());
    } else {
        printf("split\n");
    }
    const char *texts[1] = {argv[5]};
    s = edgecut_embed(model, texts, 1, local, dim, NULL);
    if (s != EDGECUT_STATUS_OK) return fail("edgecut_embed", s);
    double worst = 0;
    for (size_t i = 0; i < dim; i++) {
        double d = fabs((double)remote[i] - (double)local[i]);
        if (d > worst) worst = d;
    }
    printf("max |split - local| = %g\n", worst);
    free(remote);
    free(local);
    edgecut_split_close(split);
    edgecut_model_close(model);
    return 0;
}
