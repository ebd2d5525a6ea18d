/* Test oracle for osd/src/ec: prints jerasure's reed_sol_vandermonde_coding_matrix(k, m, 8)
 * and the parity jerasure computes for data read from stdin.
 *
 * usage: jerasure_oracle K M SIZE < data (K * SIZE bytes, chunk after chunk)
 * output: "matrix" followed by the m*k coefficients, then one line per parity chunk:
 *         "parity" followed by SIZE bytes in hex.
 * jerasure_matrix_encode needs SIZE to be a multiple of sizeof(long); other sizes are
 * computed byte by byte with jerasure's galois_single_multiply (the same field).
 * Build: cc -I/usr/include/jerasure jerasure_oracle.c -lJerasure -lgf_complete */
#include <stdio.h>
#include <stdlib.h>
#include <jerasure.h>
#include <reed_sol.h>
#include <galois.h>

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s K M SIZE < data\n", argv[0]);
        return 2;
    }
    int k = atoi(argv[1]), m = atoi(argv[2]), size = atoi(argv[3]);
    int *matrix = reed_sol_vandermonde_coding_matrix(k, m, 8);
    if (matrix == NULL) {
        fprintf(stderr, "reed_sol_vandermonde_coding_matrix(%d, %d, 8) failed\n", k, m);
        return 1;
    }
    char **data = calloc(k, sizeof(char *));
    char **coding = calloc(m, sizeof(char *));
    for (int i = 0; i < k; i++) {
        data[i] = malloc(size + 1);
        if (size > 0 && fread(data[i], 1, size, stdin) != (size_t)size) {
            fprintf(stderr, "short input\n");
            return 1;
        }
    }
    for (int i = 0; i < m; i++) {
        coding[i] = calloc(1, size + 1);
    }
    if (size % sizeof(long) == 0) {
        jerasure_matrix_encode(k, m, 8, matrix, data, coding, size);
    } else {
        for (int i = 0; i < m; i++)
            for (int j = 0; j < k; j++)
                for (int b = 0; b < size; b++)
                    coding[i][b] ^= (char)galois_single_multiply(
                        matrix[i * k + j], (unsigned char)data[j][b], 8);
    }
    printf("matrix");
    for (int i = 0; i < m * k; i++)
        printf(" %d", matrix[i]);
    printf("\n");
    for (int i = 0; i < m; i++) {
        printf("parity ");
        for (int b = 0; b < size; b++)
            printf("%02x", (unsigned char)coding[i][b]);
        printf("\n");
    }
    return 0;
}
