using System.Buffers;
using System.Runtime.InteropServices;
using RetriKT.MLNet.Common;
using TorchSharp;
using static TorchSharp.torch;

namespace RetriKT.MLNet.Knowledge;

/// <summary>Which kernel <see cref="ExactIndex"/> uses.</summary>
public enum ExactSearchBackend
{
    /// <summary>Managed SIMD scan for single queries and small batches; TorchSharp GEMM for batches of at least
    /// <see cref="ExactIndexOptions.TorchBatchThreshold"/> queries when TorchSharp's native backend is loadable.</summary>
    Auto,
    /// <summary>Always the managed SIMD scan (no native dependency).</summary>
    Managed,
    /// <summary>Always TorchSharp: blocked <c>queries × vectorsᵀ</c> matmul on the configured device, then the managed
    /// top-k selection over each score block.</summary>
    Torch,
}

/// <summary>Options of <see cref="ExactIndex"/>.</summary>
public sealed record ExactIndexOptions
{
    /// <summary>Kernel choice. Default <see cref="ExactSearchBackend.Auto"/>.</summary>
    public ExactSearchBackend Backend { get; init; } = ExactSearchBackend.Auto;
    /// <summary>Smallest batch sent to TorchSharp under <see cref="ExactSearchBackend.Auto"/>. Default 8: below that the
    /// managed scan, which reads the vectors once per query at memory speed, is as fast and has no native call cost.</summary>
    public int TorchBatchThreshold { get; init; } = 8;
    /// <summary>Torch device for the batched path; null = CPU. Default null.</summary>
    public Device? Device { get; init; }
    /// <summary>Upper bound on the score block of the torch path (queries × vectors, in floats), so a large batch over a
    /// large store does not materialise the full score matrix. Default 4M floats (16 MiB, about the L3 cache).</summary>
    public int TorchScoreBlockFloats { get; init; } = 4 << 20;
}

/// <summary>
/// Exhaustive maximum inner-product search: the exact answer, at the memory-bandwidth bound for single queries
/// (managed SIMD scan, <see cref="VectorKernels"/>) and near the GEMM bound for batches (TorchSharp matmul + managed selection).
/// The vectors are not copied on the managed path; the torch path keeps one copy on its device, created on first use.
/// </summary>
public sealed class ExactIndex : IVectorIndex, IDisposable
{
    private const int ScanChunk = 1024; // rows scored before selection: 4 KiB of scores stay in L1

    [ThreadStatic] private static float[]? t_scratch;

    private readonly ReadOnlyMemory<float> _vectors;
    private readonly ExactIndexOptions _options;
    private readonly object _tensorLock = new();
    private Tensor? _tensor;
    private volatile bool _disposed;

    /// <summary>Indexes <paramref name="vectors"/> (row-major <c>count × dimension</c>; not copied, must not change).</summary>
    public ExactIndex(ReadOnlyMemory<float> vectors, int dimension, ExactIndexOptions? options = null)
    {
        if (dimension <= 0) throw new ArgumentOutOfRangeException(nameof(dimension), $"Dimension must be positive, found {dimension}.");
        if (vectors.Length % dimension != 0)
            throw new ArgumentException($"Vectors hold {vectors.Length} values, not a multiple of dimension {dimension}.", nameof(vectors));
        _vectors = vectors;
        Dimension = dimension;
        Count = vectors.Length / dimension;
        _options = options ?? new ExactIndexOptions();
        if (_options.TorchBatchThreshold < 1) throw new ArgumentOutOfRangeException(nameof(options), $"TorchBatchThreshold must be >= 1, found {_options.TorchBatchThreshold}.");
        if (_options.TorchScoreBlockFloats < 1024) throw new ArgumentOutOfRangeException(nameof(options), $"TorchScoreBlockFloats must be >= 1024, found {_options.TorchScoreBlockFloats}.");
    }

    /// <summary>An exact index over the embeddings of <paramref name="store"/> (ids = entry indices).</summary>
    public static ExactIndex For(KnowledgeStore store, ExactIndexOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(store);
        if (!store.HasEmbeddings) throw new ArgumentException("The knowledge store has no embeddings; call WithEmbeddings with the student encoder first.", nameof(store));
        return new ExactIndex(store.Embeddings, store.Dimension, options);
    }

    /// <inheritdoc/>
    public int Count { get; }
    /// <inheritdoc/>
    public int Dimension { get; }
    /// <summary>The indexed vectors, row-major <c>Count × Dimension</c>.</summary>
    public ReadOnlyMemory<float> Vectors => _vectors;
    /// <summary>The options this index was created with.</summary>
    public ExactIndexOptions Options => _options;

    /// <inheritdoc/>
    public void Search(ReadOnlySpan<float> query, int k, Span<int> ids, Span<float> scores)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        SearchArguments.Check(this, query, 1, k, ids.Length, scores.Length);
        if (_options.Backend == ExactSearchBackend.Torch) SearchTorch(query, 1, k, ids, scores);
        else SearchManaged(query, k, ids, scores);
    }

    /// <inheritdoc/>
    public void Search(ReadOnlySpan<float> queries, int count, int k, Span<int> ids, Span<float> scores)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        SearchArguments.Check(this, queries, count, k, ids.Length, scores.Length);
        if (count == 0) return;
        bool torch = _options.Backend switch
        {
            ExactSearchBackend.Torch => true,
            ExactSearchBackend.Managed => false,
            _ => count >= _options.TorchBatchThreshold && TorchAvailable.Value,
        };
        if (torch) SearchTorch(queries, count, k, ids, scores);
        else SearchManagedBatch(queries, count, k, ids, scores);
    }

    // ------------------------------------------------------------------ managed path

    private void SearchManaged(ReadOnlySpan<float> query, int k, Span<int> ids, Span<float> scores)
    {
        var chunk = (t_scratch ??= new float[ScanChunk]).AsSpan();
        var vectors = _vectors.Span;
        int d = Dimension;
        var top = new TopK(scores, ids, k);
        for (int start = 0; start < Count; start += ScanChunk)
        {
            int n = Math.Min(ScanChunk, Count - start);
            VectorKernels.Scores(query, vectors.Slice(start * d, n * d), n, chunk);
            VectorKernels.Select(chunk[..n], start, ref top);
        }
        top.SortDescending();
    }

    /// <summary>
    /// Managed batch: a block of rows small enough to stay in L2 is scored against every query before moving on, so
    /// the vectors are read from memory once per batch instead of once per query.
    /// </summary>
    private void SearchManagedBatch(ReadOnlySpan<float> queries, int count, int k, Span<int> ids, Span<float> scores)
    {
        if (count == 1) { SearchManaged(queries, k, ids, scores); return; }
        int d = Dimension;
        int block = Math.Clamp((256 * 1024) / (4 * d) & ~3, 4, ScanChunk); // ~256 KiB of vectors per block
        var chunk = (t_scratch ??= new float[ScanChunk]).AsSpan();
        var counts = ArrayPool<int>.Shared.Rent(count);
        try
        {
            Array.Clear(counts, 0, count);
            var vectors = _vectors.Span;
            for (int start = 0; start < Count; start += block)
            {
                int n = Math.Min(block, Count - start);
                var rows = vectors.Slice(start * d, n * d);
                for (int q = 0; q < count; q++)
                {
                    VectorKernels.Scores(queries.Slice(q * d, d), rows, n, chunk);
                    var top = TopK.Resume(scores.Slice(q * k, k), ids.Slice(q * k, k), k, counts[q]);
                    VectorKernels.Select(chunk[..n], start, ref top);
                    counts[q] = top.Count;
                }
            }
            for (int q = 0; q < count; q++)
                TopK.Resume(scores.Slice(q * k, k), ids.Slice(q * k, k), k, counts[q]).SortDescending();
        }
        finally { ArrayPool<int>.Shared.Return(counts); }
    }

    // ------------------------------------------------------------------ torch path

    private static readonly Lazy<bool> TorchAvailable = new(() =>
    {
        try { TorchDevices.EnsureNativeBackend(); return true; }
        catch (InvalidOperationException) { return false; }
    });

    private Tensor VectorsTensor()
    {
        lock (_tensorLock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
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
    private void SearchTorch(ReadOnlySpan<float> queries, int count, int k, Span<int> ids, Span<float> scores)
    {
        var vectors = VectorsTensor();
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var q = empty([count, Dimension], ScalarType.Float32, CPU);
        q.data<float>().CopyFrom(queries);
        bool onCpu = vectors.device.type == DeviceType.CPU;
        if (!onCpu) q = q.to(vectors.device);
        int block = (int)Math.Clamp(_options.TorchScoreBlockFloats / (long)count, Math.Min(Count, 256), Count);
        var counts = ArrayPool<int>.Shared.Rent(count);
        try
        {
            Array.Clear(counts, 0, count);
            for (int start = 0; start < Count; start += block)
            {
                int n = Math.Min(block, Count - start);
                using var blockScores = onCpu ? q.mm(vectors.narrow(0, start, n).t()) : q.mm(vectors.narrow(0, start, n).t()).cpu();
                ReadOnlySpan<float> all = MemoryMarshal.Cast<byte, float>(blockScores.bytes); // the CPU tensor's memory, not a copy
                for (int row = 0; row < count; row++)
                {
                    var top = TopK.Resume(scores.Slice(row * k, k), ids.Slice(row * k, k), k, counts[row]);
                    VectorKernels.Select(all.Slice(row * n, n), start, ref top);
                    counts[row] = top.Count;
                }
            }
            for (int row = 0; row < count; row++)
                TopK.Resume(scores.Slice(row * k, k), ids.Slice(row * k, k), k, counts[row]).SortDescending();
        }
        finally { ArrayPool<int>.Shared.Return(counts); }
    }

    /// <summary>Releases the torch copy of the vectors (if one was made).</summary>
    public void Dispose()
    {
        lock (_tensorLock)
        {
            _disposed = true;
            _tensor?.Dispose();
            _tensor = null;
        }
    }
}
