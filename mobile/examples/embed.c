/* Embeds two sentences with edgecut's C ABI and prints their cosine similarity.
 *
 *   cc -I mobile/include mobile/examples/embed.c target/release/libedgecut_mobile.a -lm -lpthread -ldl -o embed
 *   ./embed all-MiniLM-L6-v2.q8_0.gguf ["first sentence" "second sentence"]
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "edgecut.h"

static int fail(const char *what, EdgecutStatus s) {
    fprintf(stderr, "%s failed (status %d): %s\n", what, (int)s, edgecut_last_error());
    return 1;
}

int main(int argc, char **argv) {
    if (argc != 2 && argc != 4) {
        fprintf(stderr, "usage: %s MODEL.gguf [TEXT_A TEXT_B]\n", argv[0]);
        return 2;
    }
    const char *texts[2] = {"A man is eating food.", "A man is eating a piece of bread."};
    if (argc == 4) {
        texts[0] = argv[2];
        texts[1] = argv[3];
    }
    EdgecutOptions opts = {0}; /* all defaults */
    EdgecutModel model = 0;
    EdgecutStatus s = edgecut_model_open(argv[1], &opts, &model);
    if (s != EDGECUT_STATUS_OK) return fail("edgecut_model_open", s);

    /* Ask for the size first, then embed into a buffer of that size. */
    size_t needed = 0;
    s = edgecut_embed(model, texts, 2, NULL, 0, &needed);
    if (s != EDGECUT_STATUS_BUFFER_TOO_SMALL) return fail("edgecut_embed (size query)", s);
    float *v = malloc(needed * sizeof(float));
    if (!v) return 1;
    s = edgecut_embed(model, texts, 2, v, needed, NULL);
    if (s != EDGECUT_STATUS_OK) return fail("edgecut_embed", s);

    size_t dim = needed / 2;
    double dot = 0, na = 0, nb = 0;
    for (size_t i = 0; i < dim; i++) {
        dot += (double)v[i] * v[dim + i];
        na += (double)v[i] * v[i];
        nb += (double)v[dim + i] * v[dim + i];
    }
    printf("edgecut %s, %zu-dimensional vectors\n", edgecut_version(), dim);
    printf("%.4f\t%s\t%s\n", dot / (sqrt(na) * sqrt(nb)), texts[0], texts[1]);
    free(v);
    edgecut_model_close(model);
    return 0;
}
