using System.Numerics.Tensors;
using RetriKT.MLNet.Common;
using RetriKT.MLNet.Student;

namespace RetriKT.MLNet.Encoders;

/// <summary>
/// A BERT-family encoder's forward pass for ONE unpadded token sequence in plain managed code: embeddings (word +
/// position + segment: 0, and 1 for the second text of a pair under the encoder's <see cref="PairSegments"/>) and
/// LayerNorm, then per layer self-attention, dense, residual, LayerNorm (BERT is post-LN),
/// exact (erf) GELU feed-forward, dense, residual, LayerNorm; mean or [CLS] pooling. The same network as the training
/// assembly's TorchSharp <c>BertEncoderModule</c> (tested for parity ≤ 1e-4 on real weights).
/// <para>
/// A sequence is run at its own length instead of padded to the batch's longest: with Hugging Face's additive mask the
/// padded keys get weight exp(float.MinValue − max) = 0 exactly, so attending over the real tokens only is the same
/// computation, and it skips the work on padding (sentences in a batch differ a lot in length).
/// </para>
/// Weights are bound once into typed per-layer records (linear weights transposed to [in, out] for the
/// register-blocked kernel, Q, K and V fused into one [h, 3h] matrix), so the hot path does no name lookups.
/// Immutable; each call rents its own scratch buffers from the shared array pool (<see cref="RentedFloats"/>), so
/// concurrent calls (one per sentence) are safe and a served call allocates nothing.
/// </summary>
internal sealed class ManagedBertEncoder
{
    /// <summary>One transformer layer; every linear weight is [in, out] row-major.</summary>
    private sealed record Layer(
        float[] QkvW, float[] QkvB, float[] AttnOutW, float[] AttnOutB, float[] AttnLnW, float[] AttnLnB,
        float[] FfnInW, float[] FfnInB, float[] FfnOutW, float[] FfnOutB, float[] OutLnW, float[] OutLnB);

    private readonly float[] _word, _position, _segment0, _segment1, _embLnW, _embLnB;
    private readonly Layer[] _layers;
    private readonly float _eps;
    private readonly int _sepId;
    private readonly PairSegments _segments;

    /// <summary>
    /// Binds <paramref name="weights"/> (already checked name by name and shape by shape by <see cref="BertWeights"/>);
    /// a pair's token types follow <paramref name="segments"/>, its texts split at the vocabulary's [SEP]
    /// (<paramref name="sepId"/>).
    /// </summary>
    public ManagedBertEncoder(BertWeights weights, int sepId, PairSegments segments)
    {
        ArgumentNullException.ThrowIfNull(weights);
        _sepId = sepId;
        _segments = segments;
        Config = weights.Config;
        int h = Config.HiddenSize, f = Config.IntermediateSize;
        float[] W(string name) => weights.Tensors[name].Data;
        // [out, in] (torch layout) → [in, out], so the matmul streams contiguous output columns.
        float[] T(string name, int rows, int columns) => ManagedStudentEncoder.Transpose(W(name), rows, columns);

        _word = W("embeddings.word_embeddings.weight");
        _position = W("embeddings.position_embeddings.weight");
        var tokenTypes = W("embeddings.token_type_embeddings.weight");
        _segment0 = tokenTypes.AsSpan(0, h).ToArray();
        // A checkpoint with one token type (type_vocab_size 1) has no second segment: both texts of a pair get type 0.
        _segment1 = Config.TypeVocabSize >= 2 ? tokenTypes.AsSpan(h, h).ToArray() : _segment0;
        _embLnW = W("embeddings.LayerNorm.weight");
        _embLnB = W("embeddings.LayerNorm.bias");
        _eps = (float)Config.LayerNormEpsilon;
        _layers = new Layer[Config.NumLayers];
        for (int i = 0; i < _layers.Length; i++)
        {
            var p = $"encoder.layer.{i}.";
            // Q, K and V side by side: [h, 3h], one matmul for all three.
            var q = T(p + "attention.self.query.weight", h, h);
            var k = T(p + "attention.self.key.weight", h, h);
            var v = T(p + "attention.self.value.weight", h, h);
            var qkv = new float[h * 3 * h];
            for (int r = 0; r < h; r++)
            {
                q.AsSpan(r * h, h).CopyTo(qkv.AsSpan(r * 3 * h, h));
                k.AsSpan(r * h, h).CopyTo(qkv.AsSpan(r * 3 * h + h, h));
                v.AsSpan(r * h, h).CopyTo(qkv.AsSpan(r * 3 * h + 2 * h, h));
            }
            float[] qkvB = [.. W(p + "attention.self.query.bias"), .. W(p + "attention.self.key.bias"), .. W(p + "attention.self.value.bias")];
            _layers[i] = new Layer(qkv, qkvB,
                T(p + "attention.output.dense.weight", h, h), W(p + "attention.output.dense.bias"),
                W(p + "attention.output.LayerNorm.weight"), W(p + "attention.output.LayerNorm.bias"),
                T(p + "intermediate.dense.weight", f, h), W(p + "intermediate.dense.bias"),
                T(p + "output.dense.weight", h, f), W(p + "output.dense.bias"),
                W(p + "output.LayerNorm.weight"), W(p + "output.LayerNorm.bias"));
        }
        ParameterCount = weights.Tensors.Values.Sum(t => (long)t.Data.Length);
    }

    /// <summary>The encoder's shape.</summary>
    public BertConfig Config { get; }

    /// <summary>Number of weights bound from the checkpoint (including a pooler this encoder does not use).</summary>
    public long ParameterCount { get; }

    /// <summary>Multiply-adds of one forward pass over <paramref name="tokens"/> tokens (FLOPs = 2 × this).</summary>
    public static long MultiplyAdds(BertConfig c, int tokens)
    {
        long t = tokens, h = c.HiddenSize, f = c.IntermediateSize;
        return c.NumLayers * (t * h * 4 * h + 2 * t * h * f + 2 * t * t * h);
    }

    /// <summary>Pooled (not normalised) embedding of one sequence of token ids ([CLS] ... [SEP], unpadded).</summary>
    public void Encode(ReadOnlySpan<int> ids, BertPooling pooling, Span<float> pooled)
    {
        int t = ids.Length, h = Config.HiddenSize;
        if (pooled.Length < h) throw new ArgumentException($"Destination holds {pooled.Length} values, expected {h}.", nameof(pooled));
        var scratch = new RentedFloats();
        try
        {
            var x = Forward(ids, Config.NumLayers, ref scratch);
            var result = pooled[..h];
            if (pooling == BertPooling.Cls) { x.AsSpan(0, h).CopyTo(result); return; }
            result.Clear();
            for (int i = 0; i < t; i++) TensorPrimitives.Add(result, x.AsSpan(i * h, h), result);
            TensorPrimitives.Divide(result, t, result);
        }
        finally { scratch.Return(); }
    }

    /// <summary>
    /// Token states [t, h] (row-major) after the embeddings and the first <paramref name="layers"/> layers: the input
    /// of layer <paramref name="layers"/> (a student that fine-tunes the top layers caches these once per text).
    /// </summary>
    public float[] States(ReadOnlySpan<int> ids, int layers)
    {
        var scratch = new RentedFloats();
        try { return Forward(ids, layers, ref scratch).AsSpan(0, ids.Length * Config.HiddenSize).ToArray(); }
        finally { scratch.Return(); }
    }

    /// <summary>
    /// The forward pass into buffers rented from <paramref name="scratch"/> (a served call allocates nothing); returns
    /// the rented array whose first t·h values are the states, valid until the caller returns the scratch.
    /// </summary>
    private float[] Forward(ReadOnlySpan<int> ids, int layers, ref RentedFloats scratch)
    {
        int t = ids.Length, h = Config.HiddenSize, f = Config.IntermediateSize;
        if (t == 0 || t > Config.MaxPositions) throw new ArgumentOutOfRangeException(nameof(ids), $"Sequence has {t} tokens; expected 1..{Config.MaxPositions}.");
        if (layers < 0 || layers > _layers.Length) throw new ArgumentOutOfRangeException(nameof(layers), $"Layers must be in [0, {_layers.Length}], found {layers}.");
        var x = scratch.Rent(t * h);
        var a = scratch.Rent(t * h);
        var y = scratch.Rent(t * h);
        var qkv = scratch.Rent(t * 3 * h);
        var ffn = scratch.Rent(t * f);
        var geluT = scratch.Rent(t * f);
        var geluC = scratch.Rent(t * f);
        int heads = Config.NumHeads, hs = h / heads;
        var scores = scratch.Rent(t * t);
        var q = scratch.Rent(t * hs);
        var kt = scratch.Rent(hs * t);
        var v = scratch.Rent(t * hs);
        // Rented arrays can be longer than asked: every whole-buffer operation runs on the used length only.
        var aUsed = a.AsSpan(0, t * h);
        var xUsed = x.AsSpan(0, t * h);

        int secondSegmentStart = BertEncoderSource.SecondSegmentStart(ids, _sepId, _segments);
        for (int i = 0; i < t; i++)
        {
            int id = ids[i];
            if ((uint)id >= (uint)Config.VocabSize) throw new ArgumentOutOfRangeException(nameof(ids), $"Token id {id} is outside the vocabulary of {Config.VocabSize}.");
            var row = a.AsSpan(i * h, h);
            TensorPrimitives.Add(_word.AsSpan(id * h, h), _position.AsSpan(i * h, h), row);
            TensorPrimitives.Add(row, i < secondSegmentStart ? _segment0 : _segment1, row);
        }
        ManagedStudentEncoder.LayerNorm(a, _embLnW, _embLnB, x, t, h, _eps);

        foreach (var layer in _layers.AsSpan(0, layers))
        {
            ManagedStudentEncoder.MatMul(x, layer.QkvW, layer.QkvB, qkv, t, h, 3 * h);
            ManagedStudentEncoder.Attention(qkv, y, t, h, heads, q, kt, v, scores); // no mask: the row is unpadded
            // Post-LN: x = LN(x + dense(attention)); x = LN(x + dense(gelu(dense(x)))).
            ManagedStudentEncoder.MatMul(y, layer.AttnOutW, layer.AttnOutB, a, t, h, h);
            TensorPrimitives.Add(aUsed, xUsed, aUsed);
            ManagedStudentEncoder.LayerNorm(a, layer.AttnLnW, layer.AttnLnB, x, t, h, _eps);
            ManagedStudentEncoder.MatMul(x, layer.FfnInW, layer.FfnInB, ffn, t, h, f);
            GeluErf(ffn.AsSpan(0, t * f), geluT, geluC);
            ManagedStudentEncoder.MatMul(ffn, layer.FfnOutW, layer.FfnOutB, a, t, f, h);
            TensorPrimitives.Add(aUsed, xUsed, aUsed);
            ManagedStudentEncoder.LayerNorm(a, layer.OutLnW, layer.OutLnB, x, t, h, _eps);
        }
        return x;
    }

    /// <summary>
    /// Exact GELU, x·Φ(x) with Φ(x) = 0.5·erfc(−x/√2), in place; <paramref name="t"/> and <paramref name="c"/> are
    /// scratch of v's length. BERT checkpoints were trained with the erf form; the tanh approximation (the student's)
    /// is off by up to ~1e-3, far above the parity budget. erfc has no TensorPrimitives kernel, so it is built from
    /// vectorised spans with Numerical Recipes' erfc (fractional error &lt; 1.2e-7 everywhere): e = 0.5·erfc(|x|/√2)
    /// is computed once, and Φ = 1 − e for x ≥ 0 or e for x &lt; 0, i.e. 0.5 + sign(x)·(0.5 − e). Taking erfc of |x|
    /// keeps the small tail of Φ for negative x accurate instead of subtracting nearly equal numbers.
    /// </summary>
    internal static void GeluErf(Span<float> v, Span<float> t, Span<float> c)
    {
        t = t[..v.Length];
        c = c[..v.Length];
        TensorPrimitives.Abs(v, c);
        TensorPrimitives.Multiply(c, 0.70710678f, c);                 // z = |x|/√2
        TensorPrimitives.Multiply(c, 0.5f, t);
        TensorPrimitives.Add(t, 1f, t);
        TensorPrimitives.Reciprocal(t, t);                             // t = 1/(1 + z/2)
        TensorPrimitives.Multiply(c, c, c);                            // z²
        TensorPrimitives.Negate(c, c);
        TensorPrimitives.Add(c, -1.26551223f, c);                      // −z² − 1.26551223 + t·P(t), Horner below
        ErfcPolynomial(t, c);
        TensorPrimitives.Exp(c, c);
        TensorPrimitives.Multiply(c, t, c);
        TensorPrimitives.Multiply(c, 0.5f, c);                         // e = 0.5·erfc(z)
        TensorPrimitives.Subtract(0.5f, c, c);                         // 0.5 − e
        TensorPrimitives.CopySign(c, v, c);
        TensorPrimitives.Add(c, 0.5f, c);                              // Φ(x)
        TensorPrimitives.Multiply(v, c, v);
    }

    /// <summary>c += t·P(t), Numerical Recipes' erfc polynomial, with t ≥ 0 scratch of the same length reused in place.</summary>
    private static void ErfcPolynomial(Span<float> t, Span<float> c)
    {
        ReadOnlySpan<float> coefficients = [-0.82215223f, 1.48851587f, -1.13520398f, 0.27886807f, -0.18628806f, 0.09678418f, 0.37409196f, 1.00002368f];
        // Horner on a fresh accumulator per chunk: acc = ((0.17087277·t + a0)·t + a1)·t ... + a7, then c += t·acc.
        Span<float> acc = stackalloc float[256];
        for (int start = 0; start < t.Length; start += acc.Length)
        {
            int n = Math.Min(acc.Length, t.Length - start);
            var tc = t.Slice(start, n);
            var a = acc[..n];
            TensorPrimitives.Multiply(tc, 0.17087277f, a);
            TensorPrimitives.Add(a, coefficients[0], a);
            for (int k = 1; k < coefficients.Length; k++) TensorPrimitives.MultiplyAdd(a, tc, coefficients[k], a);
            TensorPrimitives.MultiplyAdd(a, tc, c.Slice(start, n), c.Slice(start, n));
        }
    }
}
