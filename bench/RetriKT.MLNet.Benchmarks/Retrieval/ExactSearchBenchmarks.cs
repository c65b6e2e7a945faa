using System.Runtime.Intrinsics;
using System.Runtime.InteropServices;
using BenchmarkDotNet.Attributes;
using RetriKT.MLNet.Knowledge;
using TorchSharp;
using static TorchSharp.torch;

namespace RetriKT.MLNet.Benchmarks.Retrieval;

/// <summary>
/// Exact search over N × 128 random unit vectors, k = 10: single query (managed SIMD scan, one thread), batch of 256
/// (TorchSharp GEMM + topk, and the managed blocked scan), next to the two bounds measured in the same run:
/// <see cref="StreamRead"/> (one streaming pass over the same N·d floats = the memory bound per query) and
/// <see cref="GemmPeak"/> (a 1024³ torch matmul = the GEMM bound). See the bound columns for the fractions.
/// </summary>
[Config(typeof(RetrievalBenchConfig))]
public class ExactSearchBenchmarks
{
    public const int D = 128, K = 10, Batch = 256, GemmSize = 1024;
    public const double GemmFlop = 2.0 * GemmSize * GemmSize * GemmSize;

    [Params(10_000, 100_000)]
    public int N;

    private float[] _vectors = [], _queries = [];
    private ExactIndex _managed = null!;
    private TorchExactIndex _torch = null!;
    private int[] _ids = [];
    private float[] _scores = [];
    private Tensor _a = null!, _b = null!;
    private int _next;

    [GlobalSetup]
    public void Setup()
    {
        _vectors = RandomUnit(N, 1);
        _queries = RandomUnit(Batch, 2);
        _managed = new ExactIndex(_vectors, D);
        _torch = new TorchExactIndex(_vectors, D);
        _ids = new int[Batch * K];
        _scores = new float[Batch * K];
        _torch.Search(_queries, Batch, K, _ids, _scores); // creates the torch copy outside the timing
        _a = randn(GemmSize, GemmSize);
        _b = randn(GemmSize, GemmSize);
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _managed.Dispose();
        _torch.Dispose();
        _a.Dispose();
        _b.Dispose();
    }

    internal static float[] RandomUnit(int count, int seed)
    {
        var rng = new Random(seed);
        var v = new float[count * D];
        for (int i = 0; i < count; i++)
        {
            double norm = 0;
            for (int j = 0; j < D; j++) { double g = rng.NextDouble() * 2 - 1; v[i * D + j] = (float)g; norm += g * g; }
            for (int j = 0; j < D; j++) v[i * D + j] /= (float)Math.Sqrt(norm);
        }
        return v;
    }

    /// <summary>One pass over the N·d floats with 8 independent 512-bit accumulators: the memory bound of one query.</summary>
    [Benchmark]
    public float StreamRead()
    {
        ref float p = ref MemoryMarshal.GetArrayDataReference(_vectors);
        Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default, a4 = default, a5 = default, a6 = default, a7 = default;
        nuint n = (nuint)_vectors.Length, i = 0;
        for (; i + 128 <= n; i += 128)
        {
            a0 += Vector512.LoadUnsafe(ref p, i); a1 += Vector512.LoadUnsafe(ref p, i + 16);
            a2 += Vector512.LoadUnsafe(ref p, i + 32); a3 += Vector512.LoadUnsafe(ref p, i + 48);
            a4 += Vector512.LoadUnsafe(ref p, i + 64); a5 += Vector512.LoadUnsafe(ref p, i + 80);
            a6 += Vector512.LoadUnsafe(ref p, i + 96); a7 += Vector512.LoadUnsafe(ref p, i + 112);
        }
        return Vector512.Sum(a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7);
    }

    /// <summary>A 1024³ fp32 matmul with torch's default threads: the GEMM peak the batched path is compared with.</summary>
    [Benchmark]
    public void GemmPeak()
    {
        using var scope = NewDisposeScope();
        using var c = _a.mm(_b);
    }

    /// <summary>One query, managed SIMD scan, calling thread only.</summary>
    [Benchmark]
    public int SingleQuery()
    {
        int q = _next++ & (Batch - 1);
        _managed.Search(_queries.AsSpan(q * D, D), K, _ids, _scores);
        return _ids[0];
    }

    /// <summary>256 queries through TorchSharp (blocked matmul + topk); time reported per query.</summary>
    [Benchmark(OperationsPerInvoke = Batch)]
    public int BatchTorch()
    {
        _torch.Search(_queries, Batch, K, _ids, _scores);
        return _ids[0];
    }

    /// <summary>256 queries through the managed blocked scan (one thread); time reported per query.</summary>
    [Benchmark(OperationsPerInvoke = Batch)]
    public int BatchManaged()
    {
        _managed.Search(_queries, Batch, K, _ids, _scores);
        return _ids[0];
    }
}
