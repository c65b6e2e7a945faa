using System.Runtime.InteropServices;
using RetriKT.MLNet.Common;
using TorchSharp;
using static TorchSharp.torch;

namespace RetriKT.MLNet.Knowledge;

/// <summary>Options of <see cref="TorchExactIndex"/>.</summary>
public sealed record TorchExactIndexOptions
{
    /// <summary>Torch device of the score matmul; null = CPU. Default null.</summary>
    public Device? Device { get; init; }
    /// <summary>Upper bound on one score block (queries × vectors, in floats), so a large batch over a large store does
    /// not materialise the full score matrix. Default 4M floats (16 MiB, about the L3 cache).</summary>
    public int ScoreBlockFloats { get; init; } = 4 << 20;
}

/// <summary>
/// Exact maximum inner-product search through TorchSharp: blocked <c>queries × vectorsᵀ</c> matmul on the configured
/// device, then the runtime's managed top-k selection over each score block. Same answers as the runtime's
/// <see cref="ExactIndex"/> (ties by lower id); near the GEMM bound for large batches (bench/ExactSearchBenchmarks).
/// Keeps one copy of the vectors on its device, created on first use; dispose to free it.
/// </summary>
public sealed class TorchExactIndex : IVectorIndex, IDisposable
{
    private readonly ReadOnlyMemory<float> _vectors;
    private readonly TorchExactIndexOptions _options;
    private readonly object _tensorLock = new();
    private Tensor? _tensor;
    // Searches hold a use: Dispose freed the tensor under another thread's matmul (garbage scores or a torch error).
    private readonly SharedUseGuard _use = new();

    /// <summary>Indexes <paramref name="vectors"/> (row-major <c>count × dimension</c>; not copied, must not change).</summary>
    public TorchExactIndex(ReadOnlyMemory<float> vectors, int dimension, TorchExactIndexOptions? options = null)
    {
        Count = SearchArguments.CheckVectors(vectors, dimension);
        _vectors = vectors;
        Dimension = dimension;
        _options = options ?? new TorchExactIndexOptions();
        if (_options.ScoreBlockFloats < 1024) throw new ArgumentOutOfRangeException(nameof(options), $"ScoreBlockFloats must be >= 1024, found {_options.ScoreBlockFloats}.");
    }

    /// <inheritdoc/>
    public int Count { get; }
    /// <inheritdoc/>
    public int Dimension { get; }

    /// <inheritdoc/>
    public void Search(ReadOnlySpan<float> query, int k, Span<int> ids, Span<float> scores)
    {
        using var use = _use.Enter(nameof(TorchExactIndex));
        SearchArguments.Check(this, query, 1, k, ids.Length, scores.Length);
        SearchBatch(query, 1, k, ids, scores);
    }

    /// <inheritdoc/>
    public void Search(ReadOnlySpan<float> queries, int count, int k, Span<int> ids, Span<float> scores)
    {
        using var use = _use.Enter(nameof(TorchExactIndex));
        SearchArguments.Check(this, queries, count, k, ids.Length, scores.Length);
        if (count == 0) return;
        SearchBatch(queries, count, k, ids, scores);
    }

    private Tensor VectorsTensor()
    {
        lock (_tensorLock) // the caller holds a use, so the index is not disposed
        {
            if (_tensor is not null) return _tensor;
            TorchDevices.EnsureNativeBackend();
            var device = _options.Device ?? CPU;
            var cpu = empty([Count, Dimension], ScalarType.Float32, CPU);
            cpu.data<float>().CopyFrom(_vectors.Span);
            if (device.type == DeviceType.CPU) _tensor = cpu;
            else { _tensor = cpu.to(device); cpu.Dispose(); }
            _tensor.DetachFromDisposeScope();
            return _tensor;
        }
    }

    /// <summary>
    /// Blocked GEMM: each block of vectors is scored against all queries with one matmul (<c>queries × blockᵀ</c>,
    /// contiguous per query), then the managed threshold selection reads the scores in place. torch's topk costs
    /// about as much as the matmul itself here; the selection skips almost every score with one vector compare.
    /// </summary>
    private void SearchBatch(ReadOnlySpan<float> queries, int count, int k, Span<int> ids, Span<float> scores)
    {
        var vectors = VectorsTensor();
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var q = empty([count, Dimension], ScalarType.Float32, CPU);
        q.data<float>().CopyFrom(queries);
        bool onCpu = vectors.device.type == DeviceType.CPU;
        if (!onCpu) q = q.to(vectors.device);
        int block = (int)Math.Clamp(_options.ScoreBlockFloats / (long)count, Math.Min(Count, 256), Count);
        using var top = new BlockedTopK(scores, ids, count, k); // the runtime's selection: same answers, same tie order
        for (int start = 0; start < Count; start += block)
        {
            int n = Math.Min(block, Count - start);
            // A scope per block: the search's scope kept every block's view of the vectors and, on a GPU, its score
            // matrix on the device until the search ended (a large store's whole score matrix at once).
            using var blockScope = NewDisposeScope();
            var blockScores = onCpu ? q.mm(vectors.narrow(0, start, n).t()) : q.mm(vectors.narrow(0, start, n).t()).cpu();
            ReadOnlySpan<float> all = MemoryMarshal.Cast<byte, float>(blockScores.bytes); // the CPU tensor's memory, not a copy
            for (int row = 0; row < count; row++) top.Offer(row, all.Slice(row * n, n), start);
        }
        top.Complete();
    }

    /// <summary>Releases the torch copy of the vectors (if one was made) once the searches in flight have finished.</summary>
    public void Dispose() => _use.Release(() =>
    {
        lock (_tensorLock)
        {
            _tensor?.Dispose();
            _tensor = null;
        }
    });
}
