using System.Numerics.Tensors;
using RetriKT.MLNet.Student;

namespace RetriKT.MLNet.Encoders;

/// <summary>
/// A BERT-family encoder's forward pass for ONE unpadded token sequence in plain managed code: embeddings (word +
/// position + segment 0) and LayerNorm, then per layer self-attention, dense, residual, LayerNorm (BERT is post-LN),
/// exact (erf) GELU feed-forward, dense, residual, LayerNorm; mean or [CLS] pooling. The same network as the training
/// assembly's TorchSharp <c>BertEncoderModule</c> (tested for parity ≤ 1e-4 on real weights).
/// <para>
/// A sequence is run at its own length instead of padded to the batch's longest: with Hugging Face's additive mask the
/// padded keys get weight exp(float.MinValue − max) = 0 exactly, so attending over the real tokens only is the same
/// computation, and it skips the work on padding (sentences in a batch differ a lot in length).
/// </para>
/// Weights are bound once into typed per-layer records (linear weights transposed to [in, out] for the
/// register-blocked kernel, Q, K and V fused into one [h, 3h] matrix), so the hot path does no name lookups.
/// Immutable; scratch buffers are per call, so concurrent calls (one per sentence) are safe.
/// </summary>
internal sealed class ManagedBertEncoder
{
    /// <summary>One transformer layer; every linear weight is [in, out] row-major.</summary>
    private sealed record Layer(
        float[] QkvW, float[] QkvB, float[] AttnOutW, float[] AttnOutB, float[] AttnLnW, float[] AttnLnB,
        float[] FfnInW, float[] FfnInB, float[] FfnOutW, float[] FfnOutB, float[] OutLnW, float[] OutLnB);

    private readonly float[] _word, _position, _segment0, _embLnW, _embLnB;
    private readonly Layer[] _layers;
    private readonly float _eps;

    /// <summary>Binds <paramref name="weights"/> (already checked name by name and shape by shape by <see cref="BertWeights"/>).</summary>
    public ManagedBertEncoder(BertWeights weights)
    {
        ArgumentNullException.ThrowIfNull(weights);
        Config = weights.Config;
        int h = Config.HiddenSize, f = Config.IntermediateSize;
        float[] W(string name) => weights.Tensors[name].Data;
        // [out, in] (torch layout) → [in, out], so the matmul streams contiguous output columns.
        float[] T(string name, int rows, int columns) => ManagedStudentEncoder.Transpose(W(name), rows, columns);

        _word = W("embeddings.word_embeddings.weight");
        _position = W("embeddings.position_embeddings.weight");
        _segment0 = W("embeddings.token_type_embeddings.weight").AsSpan(0, h).ToArray();
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
        int t = ids.Length, h = Config.HiddenSize, f = Config.IntermediateSize;
        if (t == 0 || t > Config.MaxPositions) throw new ArgumentOutOfRangeException(nameof(ids), $"Sequence has {t} tokens; expected 1..{Config.MaxPositions}.");
        if (pooled.Length < h) throw new ArgumentException($"Destination holds {pooled.Length} values, expected {h}.", nameof(pooled));
        var x = new float[t * h];
        var a = new float[t * h];
        var y = new float[t * h];
        var qkv = new float[t * 3 * h];
        var ffn = new float[t * f];
        int heads = Config.NumHeads, hs = h / heads;
        var scores = new float[t * t];
        var q = new float[t * hs];
        var kt = new float[hs * t];
        var v = new float[t * hs];

        for (int i = 0; i < t; i++)
        {
            int id = ids[i];
            if ((uint)id >= (uint)Config.VocabSize) throw new ArgumentOutOfRangeException(nameof(ids), $"Token id {id} is outside the vocabulary of {Config.VocabSize}.");
            var row = a.AsSpan(i * h, h);
            TensorPrimitives.Add(_word.AsSpan(id * h, h), _position.AsSpan(i * h, h), row);
            TensorPrimitives.Add(row, _segment0, row); // segment ids are all 0, as BertSentenceEncoder feeds them
        }
        ManagedStudentEncoder.LayerNorm(a, _embLnW, _embLnB, x, t, h, _eps);

        foreach (var layer in _layers)
        {
            ManagedStudentEncoder.MatMul(x, layer.QkvW, layer.QkvB, qkv, t, h, 3 * h);
            ManagedStudentEncoder.Attention(qkv, y, t, h, heads, q, kt, v, scores); // no mask: the row is unpadded
            // Post-LN: x = LN(x + dense(attention)); x = LN(x + dense(gelu(dense(x)))).
            ManagedStudentEncoder.MatMul(y, layer.AttnOutW, layer.AttnOutB, a, t, h, h);
            TensorPrimitives.Add(a, x, a);
            ManagedStudentEncoder.LayerNorm(a, layer.AttnLnW, layer.AttnLnB, x, t, h, _eps);
            ManagedStudentEncoder.MatMul(x, layer.FfnInW, layer.FfnInB, ffn, t, h, f);
            GeluErf(ffn);
            ManagedStudentEncoder.MatMul(ffn, layer.FfnOutW, layer.FfnOutB, a, t, f, h);
            TensorPrimitives.Add(a, x, a);
            ManagedStudentEncoder.LayerNorm(a, layer.OutLnW, layer.OutLnB, x, t, h, _eps);
        }

        var result = pooled[..h];
        if (pooling == BertPooling.Cls) { x.AsSpan(0, h).CopyTo(result); return; }
        result.Clear();
        for (int i = 0; i < t; i++) TensorPrimitives.Add(result, x.AsSpan(i * h, h), result);
        TensorPrimitives.Divide(result, t, result);
    }

    /// <summary>
    /// Exact GELU, x·Φ(x) = 0.5·x·(1 + erf(x/√2)), in place. BERT checkpoints were trained with the erf form; the
    /// tanh approximation (the student's) differs by up to ~1e-3, far above the parity budget. erf has no
    /// TensorPrimitives kernel, so it is computed per element in double with <see cref="Erf"/> (~1e-15), which keeps
    /// the activation exact to float rounding; it is a small share of the time next to the matmuls.
    /// </summary>
    private static void GeluErf(Span<float> v)
    {
        for (int i = 0; i < v.Length; i++)
        {
            double x = v[i];
            v[i] = (float)(0.5 * x * (1 + Erf(x * 0.70710678118654752440)));
        }
    }

    /// <summary>erf(x) to ~1e-15 (W. J. Cody's rational approximations, as used by most libm implementations).</summary>
    internal static double Erf(double x)
    {
        double ax = Math.Abs(x);
        if (ax < 0.5)
        {
            // erf(x) = x · P(x²) / Q(x²) on [0, 0.5].
            double z = x * x;
            double num = (((0.185777706184603153 * z + 3.16112374387056560) * z + 113.864154151050156) * z + 377.485237685302021) * z + 3209.37758913846947;
            double den = (((z + 23.6012909523441209) * z + 244.024637934444173) * z + 1282.61652607737228) * z + 2844.23683343917062;
            return x * num / den;
        }
        double erfc;
        if (ax < 4)
        {
            double num = (((((((2.15311535474403846e-8 * ax + 5.64188496988670089e-1) * ax + 8.88314979438837594) * ax + 66.1191906371416295) * ax
                + 298.635138197400131) * ax + 881.952221241769090) * ax + 1712.04761263407058) * ax + 2051.07837782607147) * ax + 1230.33935479799725;
            double den = (((((((ax + 15.7449261107098347) * ax + 117.693950891312499) * ax + 537.181101862009858) * ax + 1621.38957456669019) * ax
                + 3290.79923573345963) * ax + 4362.61909014324716) * ax + 3439.36767414372164) * ax + 1230.33935480374942;
            erfc = Math.Exp(-ax * ax) * num / den;
        }
        else if (ax < 6)
        {
            double z = 1 / (ax * ax);
            double num = ((((1.63153871373020978e-2 * z + 3.05326634961232344e-1) * z + 3.60344899949804439e-1) * z + 1.25781726111229246e-1) * z + 1.60837851487422766e-2) * z + 6.58749161529837803e-4;
            double den = ((((z + 2.56852019228982242) * z + 1.87295284992346725) * z + 5.27905102951428412e-1) * z + 6.05183413124413191e-2) * z + 2.33520497626869185e-3;
            erfc = Math.Exp(-ax * ax) / ax * (0.56418958354775628695 - z * num / den);
        }
        else erfc = 0;
        return x < 0 ? erfc - 1 : 1 - erfc;
    }
}
