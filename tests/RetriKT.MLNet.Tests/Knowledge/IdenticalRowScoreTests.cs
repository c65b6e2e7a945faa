using RetriKT.MLNet.Knowledge;

namespace RetriKT.MLNet.Tests.Knowledge;

/// <summary>
/// The exact scan scores four rows at a time and the last (count mod 4) rows one by one (the single-vector kernel, also
/// HNSW's). Both must sum in the same order on every SIMD width, or identical stored vectors (a text stored twice) get
/// different scores by where they sit, and the higher id can rank first, against "equal scores by lower id". On a CPU
/// without AVX-512 (or with DOTNET_PreferredVectorBitWidth=256, .NET's default on some AVX-512 Intel parts) the 256-bit
/// block kernel summed with one accumulator per row and the row kernel with two: the scores of two copies differed in
/// 154 of 200 random cases at d = 384, and the later copy ranked first in 69.
/// </summary>
public class IdenticalRowScoreTests
{
    [Theory]
    [InlineData(256, 16)]
    [InlineData(256, 48)]
    [InlineData(256, 100)]
    [InlineData(256, 384)]
    [InlineData(512, 48)]
    [InlineData(512, 384)]
    public void EveryRowScoresAsTheRowKernelOnEverySimdWidth(int widthBits, int d)
    {
        const int rows = 7; // one 4-row block and a 3-row tail
        var random = new Random(d);
        int differing = 0;
        for (int trial = 0; trial < 50; trial++)
        {
            var vectors = new float[rows * d];
            for (int i = 0; i < vectors.Length; i++) vectors[i] = (float)(random.NextDouble() * 2 - 1);
            var query = new float[d];
            for (int i = 0; i < d; i++) query[i] = (float)(random.NextDouble() * 2 - 1);
            var scores = new float[rows];
            VectorKernels.Scores(query, vectors, rows, scores, widthBits);
            for (int r = 0; r < rows; r++)
                if (scores[r] != VectorKernels.Dot(query, vectors.AsSpan(r * d, d), widthBits)) differing++;
        }
        Assert.True(differing == 0, $"{widthBits}-bit kernels, d = {d}: {differing} of {50 * rows} block scores differ from the row kernel's (expected bit-identical)");
    }

    [Fact]
    public void TwoCopiesOfAVectorTieAndTheLowerIdRanksFirst()
    {
        const int d = 384, n = 5;
        for (int seed = 0; seed < 50; seed++)
        {
            var random = new Random(seed);
            var vectors = new float[n * d];
            for (int i = 0; i < vectors.Length; i++) vectors[i] = (float)(random.NextDouble() * 2 - 1);
            vectors.AsSpan(0, d).CopyTo(vectors.AsSpan(4 * d, d)); // row 4 (the tail) = row 0 (the 4-row block)
            var query = new float[d];
            for (int i = 0; i < d; i++) query[i] = (float)(random.NextDouble() * 2 - 1);
            foreach (int width in new[] { 256, 512 })
            {
                var scores = new float[n];
                VectorKernels.Scores(query, vectors, n, scores, width);
                Assert.True(scores[0] == scores[4], $"seed {seed}, {width}-bit: copies of one vector scored {scores[0]:R} (row 0) and {scores[4]:R} (row 4)");
            }
        }
    }
}
