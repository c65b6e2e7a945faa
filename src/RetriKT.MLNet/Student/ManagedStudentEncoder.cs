using System.Numerics;
using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using RetriKT.MLNet.Common;
using RetriKT.MLNet.Text;

namespace RetriKT.MLNet.Student;

/// <summary>
/// The student encoder's forward pass for ONE unpadded row in plain managed code (<see cref="TensorPrimitives"/> and a
/// register-blocked SIMD matmul for the inner loops): the runtime's only inference path, no TorchSharp. Numerically the
/// same network as the training assembly's <c>StudentModel</c> in eval mode (tested for parity, ≤ 1e-5). Immutable;
/// each call rents its own scratch buffers from the shared array pool (<see cref="RentedFloats"/>), so concurrent
/// calls are safe and a served call allocates nothing.
/// </summary>
internal sealed class ManagedStudentEncoder : IStudentNetwork
{
    private sealed record Block(float[] Ln1W, float[] Ln1B, float[] QkvW, float[] QkvB, float[] ProjW, float[] ProjB,
        float[] Ln2W, float[] Ln2B, float[] FcW, float[] FcB, float[] Fc2W, float[] Fc2B);

    private readonly StudentConfig _config;
    private readonly float[] _wte, _wpe, _wse, _lnFW, _lnFB, _headW, _headB;
    private readonly Block[] _blocks;

    /// <summary>Binds the weights of a network of shape <paramref name="config"/>; every tensor's shape is checked.</summary>
    public ManagedStudentEncoder(StudentConfig config, StudentWeights weights)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(weights);
        _config = config;
        int h = config.HiddenSize, f = config.FeedForwardSize;
        _wte = config.EmbeddingRank == 0 ? weights.Get("wte.weight", config.VocabularySize, h) : FactoredEmbeddings(config, weights);
        _wpe = weights.Get("wpe.weight", config.MaxLength, h);
        _wse = weights.Get("wse.weight", 2, h);
        _lnFW = weights.Get("ln_f.weight", h);
        _lnFB = weights.Get("ln_f.bias", h);
        _headW = weights.Get("head.weight", config.LabelCount, h);
        _headB = weights.Get("head.bias", config.LabelCount);
        // Linear weights are stored transposed ([in, out]) so the kernel streams contiguous output rows.
        _blocks = Enumerable.Range(0, config.Layers).Select(i => new Block(
            weights.Get($"h.{i}.ln_1.weight", h), weights.Get($"h.{i}.ln_1.bias", h),
            Transpose(weights.Get($"h.{i}.attn_qkv.weight", 3 * h, h), 3 * h, h), weights.Get($"h.{i}.attn_qkv.bias", 3 * h),
            Transpose(weights.Get($"h.{i}.attn_proj.weight", h, h), h, h), weights.Get($"h.{i}.attn_proj.bias", h),
            weights.Get($"h.{i}.ln_2.weight", h), weights.Get($"h.{i}.ln_2.bias", h),
            Transpose(weights.Get($"h.{i}.mlp_fc.weight", f, h), f, h), weights.Get($"h.{i}.mlp_fc.bias", f),
            Transpose(weights.Get($"h.{i}.mlp_proj.weight", h, f), h, f), weights.Get($"h.{i}.mlp_proj.bias", h))).ToArray();
    }

    /// <summary>
    /// The [V, H] token table of factored embeddings, multiplied out once: row i = factors[i] · projectionᵀ, the same
    /// product the training network computes per token (the runtime then reads one row per token, as for a whole table).
    /// </summary>
    private static float[] FactoredEmbeddings(StudentConfig config, StudentWeights weights)
    {
        int v = config.VocabularySize, h = config.HiddenSize, r = config.EmbeddingRank;
        var factors = weights.Get("wte.weight", v, r);
        var projection = weights.Get(StudentConfig.EmbeddingProjectionName, h, r);
        var table = new float[(long)v * h];
        for (int i = 0; i < v; i++)
        {
            var factor = factors.AsSpan(i * r, r);
            for (int j = 0; j < h; j++) table[(long)i * h + j] = TensorPrimitives.Dot(factor, projection.AsSpan(j * r, r));
        }
        return table;
    }

    /// <summary>Multiply-adds of one forward pass over <paramref name="tokens"/> tokens (for FLOP-rate reports: FLOPs = 2 × this).</summary>
    public static long MultiplyAdds(StudentConfig c, int tokens)
    {
        long t = tokens, h = c.HiddenSize, f = c.FeedForwardSize;
        long perLayer = t * h * 3 * h + t * h * h + 2 * t * h * f + 2 * t * t * h;
        return c.Layers * perLayer + h * c.LabelCount;
    }

    /// <summary>Pooled (not normalised) embedding of one row of token ids.</summary>
    public void Encode(ReadOnlySpan<int> ids, int sepId, Span<float> pooled)
    {
        var scratch = new RentedFloats();
        try { Encode(ids, sepId, pooled, ref scratch); }
        finally { scratch.Return(); }
    }

    /// <summary>The forward pass of <see cref="Encode(ReadOnlySpan{int}, int, Span{float})"/> into buffers rented from <paramref name="scratch"/>.</summary>
    private void Encode(ReadOnlySpan<int> ids, int sepId, Span<float> pooled, ref RentedFloats scratch)
    {
        int t = ids.Length, h = _config.HiddenSize, f = _config.FeedForwardSize;
        if (t == 0 || t > _config.MaxLength) throw new ArgumentOutOfRangeException(nameof(ids), $"Row has {t} tokens; expected 1..{_config.MaxLength}.");
        var x = scratch.Rent(t * h);
        var a = scratch.Rent(t * h);
        var qkv = scratch.Rent(t * 3 * h);
        var y = scratch.Rent(t * h);
        var mlp = scratch.Rent(t * f);
        var gelu = scratch.Rent(t * f);
        int hs0 = _config.HeadSize;
        var scores = scratch.Rent(t * t);
        var q = scratch.Rent(t * hs0);
        var kt = scratch.Rent(hs0 * t);
        var v = scratch.Rent(t * hs0);
        // Rented arrays can be longer than asked: every whole-buffer operation runs on the used length only.
        var xUsed = x.AsSpan(0, t * h);
        var aUsed = a.AsSpan(0, t * h);
        int second = WordPieceVocabulary.SecondTextStart(ids, sepId);
        for (int i = 0; i < t; i++)
        {
            int id = ids[i];
            if ((uint)id >= (uint)_config.VocabularySize) throw new ArgumentOutOfRangeException(nameof(ids), $"Token id {id} is outside the vocabulary of {_config.VocabularySize}.");
            var row = x.AsSpan(i * h, h);
            TensorPrimitives.Add(_wte.AsSpan(id * h, h), _wpe.AsSpan(i * h, h), row);
            TensorPrimitives.Add(row, _wse.AsSpan((i < second ? 0 : 1) * h, h), row);
        }
        int heads = _config.Heads;
        foreach (var b in _blocks)
        {
            LayerNorm(x, b.Ln1W, b.Ln1B, a, t, h);
            Linear(a, b.QkvW, b.QkvB, qkv, t, h, 3 * h);
            Attention(qkv, y, t, h, heads, q, kt, v, scores);
            Linear(y, b.ProjW, b.ProjB, a, t, h, h);
            TensorPrimitives.Add(xUsed, aUsed, xUsed);
            LayerNorm(x, b.Ln2W, b.Ln2B, a, t, h);
            Linear(a, b.FcW, b.FcB, mlp, t, h, f);
            GeluTanh(mlp.AsSpan(0, t * f), gelu);
            Linear(mlp, b.Fc2W, b.Fc2B, a, t, f, h);
            TensorPrimitives.Add(xUsed, aUsed, xUsed);
        }
        LayerNorm(x, _lnFW, _lnFB, a, t, h);
        if (_config.Pooling == StudentPooling.Cls) { a.AsSpan(0, h).CopyTo(pooled); return; }
        pooled.Clear();
        for (int i = 0; i < t; i++) TensorPrimitives.Add(pooled, a.AsSpan(i * h, h), pooled);
        TensorPrimitives.Divide(pooled, t, pooled);
    }

    /// <summary>Label logits from a pooled embedding.</summary>
    public void Head(ReadOnlySpan<float> pooled, Span<float> logits)
    {
        int h = _config.HiddenSize;
        for (int k = 0; k < logits.Length; k++) logits[k] = TensorPrimitives.Dot(pooled, _headW.AsSpan(k * h, h)) + _headB[k];
    }

    /// <summary>y[t, :] = x[t, :] · Wt + b with Wt row-major [in, out] (the transpose of PyTorch's Linear weight).</summary>
    private static void Linear(float[] x, float[] wt, float[] bias, float[] y, int t, int inSize, int outSize)
        => MatMul(x, wt, bias, y, t, inSize, outSize);

    /// <summary>
    /// C [m, n] = A [m, k] · B [k, n] (+ bias per column), all row-major. Register-blocked: four rows of A against
    /// 3 SIMD vectors of B's columns at a time (12 accumulators), so each loaded B vector feeds four fused multiply-adds
    /// and each broadcast A value three; a B panel of 3 vectors × k stays in L1/L2 while every row passes over it.
    /// Every output is accumulated in the same order (bias, then i = 0..k−1, one FMA each) whatever the blocking, so
    /// results do not depend on m or on the tails.
    /// </summary>
    internal static void MatMul(float[] a, float[] b, float[]? bias, float[] c, int m, int k, int n)
    {
        int width = Vector<float>.Count, block = 3 * width;
        ref float aRef = ref MemoryMarshal.GetArrayDataReference(a);
        ref float bRef = ref MemoryMarshal.GetArrayDataReference(b);
        ref float cRef = ref MemoryMarshal.GetArrayDataReference(c);
        if ((long)m * k > a.Length || (long)k * n > b.Length || (long)m * n > c.Length || (bias is not null && bias.Length < n))
            throw new ArgumentException($"MatMul [{m}, {k}] · [{k}, {n}]: a buffer is too small."); // the loops below read unchecked
        int o = 0;
        for (; o + block <= n; o += block)
        {
            var b0 = bias is null ? Vector<float>.Zero : Vector.LoadUnsafe(ref MemoryMarshal.GetArrayDataReference(bias), (nuint)o);
            var b1 = bias is null ? Vector<float>.Zero : Vector.LoadUnsafe(ref MemoryMarshal.GetArrayDataReference(bias), (nuint)(o + width));
            var b2 = bias is null ? Vector<float>.Zero : Vector.LoadUnsafe(ref MemoryMarshal.GetArrayDataReference(bias), (nuint)(o + 2 * width));
            int r = 0;
            for (; r + 4 <= m; r += 4)
            {
                Vector<float> p0 = b0, p1 = b1, p2 = b2, q0 = b0, q1 = b1, q2 = b2;
                Vector<float> u0 = b0, u1 = b1, u2 = b2, s0 = b0, s1 = b1, s2 = b2;
                int a0 = r * k;
                for (int i = 0; i < k; i++)
                {
                    nuint at = (nuint)(i * n + o);
                    var w0 = Vector.LoadUnsafe(ref bRef, at);
                    var w1 = Vector.LoadUnsafe(ref bRef, at + (nuint)width);
                    var w2 = Vector.LoadUnsafe(ref bRef, at + (nuint)(2 * width));
                    var x = new Vector<float>(Unsafe.Add(ref aRef, a0 + i));
                    p0 = Vector.FusedMultiplyAdd(x, w0, p0); p1 = Vector.FusedMultiplyAdd(x, w1, p1); p2 = Vector.FusedMultiplyAdd(x, w2, p2);
                    x = new Vector<float>(Unsafe.Add(ref aRef, a0 + k + i));
                    q0 = Vector.FusedMultiplyAdd(x, w0, q0); q1 = Vector.FusedMultiplyAdd(x, w1, q1); q2 = Vector.FusedMultiplyAdd(x, w2, q2);
                    x = new Vector<float>(Unsafe.Add(ref aRef, a0 + 2 * k + i));
                    u0 = Vector.FusedMultiplyAdd(x, w0, u0); u1 = Vector.FusedMultiplyAdd(x, w1, u1); u2 = Vector.FusedMultiplyAdd(x, w2, u2);
                    x = new Vector<float>(Unsafe.Add(ref aRef, a0 + 3 * k + i));
                    s0 = Vector.FusedMultiplyAdd(x, w0, s0); s1 = Vector.FusedMultiplyAdd(x, w1, s1); s2 = Vector.FusedMultiplyAdd(x, w2, s2);
                }
                nuint c0 = (nuint)(r * n + o), step = (nuint)n, w = (nuint)width;
                p0.StoreUnsafe(ref cRef, c0); p1.StoreUnsafe(ref cRef, c0 + w); p2.StoreUnsafe(ref cRef, c0 + 2 * w);
                q0.StoreUnsafe(ref cRef, c0 + step); q1.StoreUnsafe(ref cRef, c0 + step + w); q2.StoreUnsafe(ref cRef, c0 + step + 2 * w);
                u0.StoreUnsafe(ref cRef, c0 + 2 * step); u1.StoreUnsafe(ref cRef, c0 + 2 * step + w); u2.StoreUnsafe(ref cRef, c0 + 2 * step + 2 * w);
                s0.StoreUnsafe(ref cRef, c0 + 3 * step); s1.StoreUnsafe(ref cRef, c0 + 3 * step + w); s2.StoreUnsafe(ref cRef, c0 + 3 * step + 2 * w);
            }
            for (; r < m; r++) // the last rows, one at a time, still vectorised
            {
                Vector<float> p0 = b0, p1 = b1, p2 = b2;
                int a0 = r * k;
                for (int i = 0; i < k; i++)
                {
                    nuint at = (nuint)(i * n + o);
                    var x = new Vector<float>(Unsafe.Add(ref aRef, a0 + i));
                    p0 = Vector.FusedMultiplyAdd(x, Vector.LoadUnsafe(ref bRef, at), p0);
                    p1 = Vector.FusedMultiplyAdd(x, Vector.LoadUnsafe(ref bRef, at + (nuint)width), p1);
                    p2 = Vector.FusedMultiplyAdd(x, Vector.LoadUnsafe(ref bRef, at + (nuint)(2 * width)), p2);
                }
                nuint c0 = (nuint)(r * n + o);
                p0.StoreUnsafe(ref cRef, c0); p1.StoreUnsafe(ref cRef, c0 + (nuint)width); p2.StoreUnsafe(ref cRef, c0 + (nuint)(2 * width));
            }
        }
        for (; o + width <= n; o += width) // one vector of columns, four rows at a time (independent FMA chains)
        {
            var b0 = bias is null ? Vector<float>.Zero : Vector.LoadUnsafe(ref MemoryMarshal.GetArrayDataReference(bias), (nuint)o);
            int r = 0;
            for (; r + 4 <= m; r += 4)
            {
                Vector<float> p0 = b0, p1 = b0, p2 = b0, p3 = b0;
                int a0 = r * k;
                for (int i = 0; i < k; i++)
                {
                    var w = Vector.LoadUnsafe(ref bRef, (nuint)(i * n + o));
                    p0 = Vector.FusedMultiplyAdd(new Vector<float>(a[a0 + i]), w, p0);
                    p1 = Vector.FusedMultiplyAdd(new Vector<float>(a[a0 + k + i]), w, p1);
                    p2 = Vector.FusedMultiplyAdd(new Vector<float>(a[a0 + 2 * k + i]), w, p2);
                    p3 = Vector.FusedMultiplyAdd(new Vector<float>(a[a0 + 3 * k + i]), w, p3);
                }
                p0.StoreUnsafe(ref cRef, (nuint)(r * n + o));
                p1.StoreUnsafe(ref cRef, (nuint)((r + 1) * n + o));
                p2.StoreUnsafe(ref cRef, (nuint)((r + 2) * n + o));
                p3.StoreUnsafe(ref cRef, (nuint)((r + 3) * n + o));
            }
            for (; r < m; r++) MatMulScalar(a, b, bias, c, r, k, n, o, o + width);
        }
        if (o < n)
            for (int r = 0; r < m; r++) MatMulScalar(a, b, bias, c, r, k, n, o, n);
    }

    /// <summary>Row <paramref name="r"/>, columns [from, to) of <see cref="MatMul"/> (tails that do not fill a block).</summary>
    private static void MatMulScalar(float[] a, float[] b, float[]? bias, float[] c, int r, int k, int n, int from, int to)
    {
        for (int o = from; o < to; o++)
        {
            float sum = bias?[o] ?? 0f;
            for (int i = 0; i < k; i++) sum = MathF.FusedMultiplyAdd(a[r * k + i], b[i * n + o], sum);
            c[r * n + o] = sum;
        }
    }

    /// <summary>
    /// Multi-head self-attention over one unpadded row: <paramref name="qkv"/> [t, 3h] holds Q, K and V side by side,
    /// <paramref name="y"/> [t, h] gets the heads' outputs side by side. Scratch: q and v [t, h/heads], kt [h/heads, t],
    /// scores [t, t]. Shared with the runtime's BERT encoder (<c>ManagedBertEncoder</c>).
    /// </summary>
    internal static void Attention(float[] qkv, float[] y, int t, int h, int heads, float[] q, float[] kt, float[] v, float[] scores)
    {
        int hs = h / heads;
        float scale = 1f / MathF.Sqrt(hs);
        for (int head = 0; head < heads; head++)
        {
            // Gather this head's Q [t, hs], K^T [hs, t] and V [t, hs], then scores = Q K^T, softmax, Y = P V.
            for (int j = 0; j < t; j++)
            {
                int row = j * 3 * h + head * hs;
                qkv.AsSpan(row, hs).CopyTo(q.AsSpan(j * hs, hs));
                qkv.AsSpan(row + 2 * h, hs).CopyTo(v.AsSpan(j * hs, hs));
                for (int c = 0; c < hs; c++) kt[c * t + j] = qkv[row + h + c];
            }
            MatMul(q, kt, null, scores, t, hs, t);
            for (int i = 0; i < t; i++)
            {
                var s = scores.AsSpan(i * t, t);
                TensorPrimitives.Multiply(s, scale, s);
                SafeSoftMax.Compute(s, s);
            }
            MatMul(scores, v, null, q, t, t, hs);
            for (int j = 0; j < t; j++) q.AsSpan(j * hs, hs).CopyTo(y.AsSpan(j * h + head * hs, hs));
        }
    }

    internal static float[] Transpose(float[] w, int rows, int columns)
    {
        var t = new float[w.Length];
        for (int r = 0; r < rows; r++)
            for (int col = 0; col < columns; col++) t[col * rows + r] = w[r * columns + col];
        return t;
    }

    /// <summary>Row-wise LayerNorm of x [t, h] into y; epsilon 1e-5 (torch's default, the student's), BERT passes its own.</summary>
    internal static void LayerNorm(float[] x, float[] weight, float[] bias, float[] y, int t, int h, float eps = 1e-5f)
    {
        for (int i = 0; i < t; i++)
        {
            var xi = x.AsSpan(i * h, h);
            var yi = y.AsSpan(i * h, h);
            float mean = TensorPrimitives.Sum(xi) / h;
            TensorPrimitives.Subtract(xi, mean, yi);
            float variance = TensorPrimitives.SumOfSquares(yi) / h;
            TensorPrimitives.Multiply(yi, 1f / MathF.Sqrt(variance + eps), yi);
            TensorPrimitives.MultiplyAdd(yi, weight, bias, yi);
        }
    }

    /// <summary>GELU, tanh form, vectorised: 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))); <paramref name="scratch"/> ≥ v.Length.</summary>
    private static void GeluTanh(Span<float> v, Span<float> scratch)
    {
        const float c = 0.7978845608028654f; // sqrt(2/pi)
        var u = scratch[..v.Length];
        TensorPrimitives.Multiply(v, v, u);                 // x²
        TensorPrimitives.Multiply(u, 0.044715f * c, u);
        TensorPrimitives.Add(u, c, u);                      // c·(1 + 0.044715·x²)
        TensorPrimitives.Multiply(u, v, u);                 // c·(x + 0.044715·x³)
        TensorPrimitives.Tanh(u, u);
        TensorPrimitives.Add(u, 1f, u);
        TensorPrimitives.Multiply(u, v, u);
        TensorPrimitives.Multiply(u, 0.5f, v);
    }
}
