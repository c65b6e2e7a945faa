using System.Numerics.Tensors;

namespace RetriKT.MLNet.Student;

/// <summary>
/// The student encoder's forward pass for ONE unpadded row in plain managed code (weights copied to float arrays,
/// <see cref="TensorPrimitives"/> for the inner loops). Single-row prediction is dominated by TorchSharp's per-op
/// overhead (tens of tiny kernels per layer); this path has none. Numerically the same network as
/// <see cref="StudentModel"/> in eval mode (tested for parity). Immutable; scratch buffers are per call.
/// </summary>
internal sealed class ManagedStudentEncoder
{
    private sealed record Block(float[] Ln1W, float[] Ln1B, float[] QkvW, float[] QkvB, float[] ProjW, float[] ProjB,
        float[] Ln2W, float[] Ln2B, float[] FcW, float[] FcB, float[] Fc2W, float[] Fc2B);

    private readonly StudentConfig _config;
    private readonly float[] _wte, _wpe, _wse, _lnFW, _lnFB, _headW, _headB;
    private readonly Block[] _blocks;

    public ManagedStudentEncoder(StudentModel model)
    {
        _config = model.Config;
        var w = model.ExportWeights();
        float[] Get(string name) => w.TryGetValue(name, out var v) ? v : throw new InvalidDataException($"Student weights lack parameter '{name}'.");
        _wte = Get("wte.weight");
        _wpe = Get("wpe.weight");
        _wse = Get("wse.weight");
        _lnFW = Get("ln_f.weight");
        _lnFB = Get("ln_f.bias");
        _headW = Get("head.weight");
        _headB = Get("head.bias");
        _blocks = Enumerable.Range(0, _config.Layers).Select(i => new Block(
            Get($"h.{i}.ln_1.weight"), Get($"h.{i}.ln_1.bias"), Get($"h.{i}.attn_qkv.weight"), Get($"h.{i}.attn_qkv.bias"),
            Get($"h.{i}.attn_proj.weight"), Get($"h.{i}.attn_proj.bias"), Get($"h.{i}.ln_2.weight"), Get($"h.{i}.ln_2.bias"),
            Get($"h.{i}.mlp_fc.weight"), Get($"h.{i}.mlp_fc.bias"), Get($"h.{i}.mlp_proj.weight"), Get($"h.{i}.mlp_proj.bias"))).ToArray();
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
        int t = ids.Length, h = _config.HiddenSize, f = _config.FeedForwardSize;
        if (t == 0 || t > _config.MaxLength) throw new ArgumentOutOfRangeException(nameof(ids), $"Row has {t} tokens; expected 1..{_config.MaxLength}.");
        var x = new float[t * h];
        var a = new float[t * h];
        var qkv = new float[t * 3 * h];
        var y = new float[t * h];
        var mlp = new float[t * f];
        var scores = new float[t];
        int segment = 0;
        for (int i = 0; i < t; i++)
        {
            int id = ids[i];
            if ((uint)id >= (uint)_config.VocabularySize) throw new ArgumentOutOfRangeException(nameof(ids), $"Token id {id} is outside the vocabulary of {_config.VocabularySize}.");
            var row = x.AsSpan(i * h, h);
            TensorPrimitives.Add(_wte.AsSpan(id * h, h), _wpe.AsSpan(i * h, h), row);
            TensorPrimitives.Add(row, _wse.AsSpan(segment * h, h), row);
            if (id == sepId) segment = 1;
        }
        int heads = _config.Heads, hs = _config.HeadSize;
        float scale = 1f / MathF.Sqrt(hs);
        foreach (var b in _blocks)
        {
            LayerNorm(x, b.Ln1W, b.Ln1B, a, t, h);
            Linear(a, b.QkvW, b.QkvB, qkv, t, h, 3 * h);
            for (int head = 0; head < heads; head++)
            {
                for (int i = 0; i < t; i++)
                {
                    var q = qkv.AsSpan(i * 3 * h + head * hs, hs);
                    for (int j = 0; j < t; j++) scores[j] = TensorPrimitives.Dot(q, qkv.AsSpan(j * 3 * h + h + head * hs, hs)) * scale;
                    var s = scores.AsSpan(0, t);
                    TensorPrimitives.SoftMax(s, s);
                    var dst = y.AsSpan(i * h + head * hs, hs);
                    dst.Clear();
                    for (int j = 0; j < t; j++) TensorPrimitives.MultiplyAdd(qkv.AsSpan(j * 3 * h + 2 * h + head * hs, hs), s[j], dst, dst);
                }
            }
            Linear(y, b.ProjW, b.ProjB, a, t, h, h);
            TensorPrimitives.Add(x, a, x);
            LayerNorm(x, b.Ln2W, b.Ln2B, a, t, h);
            Linear(a, b.FcW, b.FcB, mlp, t, h, f);
            GeluTanh(mlp);
            Linear(mlp, b.Fc2W, b.Fc2B, a, t, f, h);
            TensorPrimitives.Add(x, a, x);
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

    /// <summary>y[t, :] = W x[t, :] + b with W row-major [out, in] (PyTorch Linear layout).</summary>
    private static void Linear(float[] x, float[] w, float[] bias, float[] y, int t, int inSize, int outSize)
    {
        for (int i = 0; i < t; i++)
        {
            var xi = x.AsSpan(i * inSize, inSize);
            var yi = y.AsSpan(i * outSize, outSize);
            for (int o = 0; o < outSize; o++) yi[o] = TensorPrimitives.Dot(xi, w.AsSpan(o * inSize, inSize)) + bias[o];
        }
    }

    private static void LayerNorm(float[] x, float[] weight, float[] bias, float[] y, int t, int h)
    {
        for (int i = 0; i < t; i++)
        {
            var xi = x.AsSpan(i * h, h);
            var yi = y.AsSpan(i * h, h);
            float mean = TensorPrimitives.Sum(xi) / h;
            TensorPrimitives.Subtract(xi, mean, yi);
            float variance = TensorPrimitives.SumOfSquares(yi) / h;
            TensorPrimitives.Multiply(yi, 1f / MathF.Sqrt(variance + 1e-5f), yi);
            TensorPrimitives.MultiplyAdd(yi, weight, bias, yi);
        }
    }

    private static void GeluTanh(Span<float> v)
    {
        const float c = 0.7978845608028654f; // sqrt(2/pi)
        for (int i = 0; i < v.Length; i++)
        {
            float x = v[i];
            v[i] = 0.5f * x * (1f + MathF.Tanh(c * (x + 0.044715f * x * x * x)));
        }
    }
}
