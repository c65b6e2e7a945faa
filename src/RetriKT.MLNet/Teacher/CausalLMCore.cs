using TorchSharp;
using static TorchSharp.torch;

namespace RetriKT.MLNet.Teacher;

/// <summary>
/// What every decoder architecture provides to <see cref="TeacherModel"/>. Parameter names equal the Hugging Face
/// checkpoint names, so loading and saving is a walk over <c>named_parameters()</c>.
/// </summary>
internal abstract class CausalLMModule : nn.Module
{
    protected CausalLMModule(string name, TeacherConfig config) : base(name) => Config = config;

    public TeacherConfig Config { get; }

    /// <summary>Token embeddings <c>[B, T, H]</c> for ids <c>[B, T]</c> (no positional part; GPT-2 adds it in <see cref="Decode"/>).</summary>
    public abstract Tensor EmbedTokens(Tensor ids);

    /// <summary>
    /// Runs the decoder over <paramref name="embeds"/> <c>[B, T, H]</c> at <paramref name="positions"/> <c>[B, T]</c>.
    /// <paramref name="attentionBias"/> is an additive mask <c>[B, 1, T, past+T]</c>, or null for plain causal attention
    /// without padding. Returns the final-normed hidden states <c>[B, T, H]</c>.
    /// </summary>
    public abstract Tensor Decode(Tensor embeds, Tensor positions, Tensor? attentionBias, KvCache? cache);

    /// <summary>Output projection: hidden <c>[.., H]</c> → logits <c>[.., V]</c>.</summary>
    public abstract Tensor LmHead(Tensor hidden);

    /// <summary>Checkpoint names that may be present but are not parameters (buffers, a duplicate tied head).</summary>
    public virtual bool IsIgnorableCheckpointKey(string name) =>
        name.EndsWith(".rotary_emb.inv_freq", StringComparison.Ordinal) || (Config.TieWordEmbeddings && name == "lm_head.weight");

    /// <summary>Maps a checkpoint key to our parameter name (GPT-2 checkpoints sometimes omit the "transformer." prefix).</summary>
    public virtual string CanonicalName(string checkpointKey) => checkpointKey;

    /// <summary>Fresh random weights (GPT-2/LLaMA-style init: N(0, 0.02), scaled residual projections, unit norms).</summary>
    public abstract void InitializeWeights(Generator generator);
}

/// <summary>Per-layer key/value cache. Owns its tensors (they live outside any dispose scope) until disposed.</summary>
internal sealed class KvCache : IDisposable
{
    private readonly Tensor?[] _keys, _values;

    public KvCache(int layers) { _keys = new Tensor?[layers]; _values = new Tensor?[layers]; }

    /// <summary>Number of cached positions (slots) so far.</summary>
    public long Length => _keys[0]?.shape[2] ?? 0;

    /// <summary>Appends this step's keys/values <c>[B, Hkv, T, D]</c> for <paramref name="layer"/> and returns the full cache.</summary>
    public (Tensor Keys, Tensor Values) Append(int layer, Tensor k, Tensor v)
    {
        var newK = _keys[layer] is { } oldK ? cat([oldK, k], 2) : k.clone();
        var newV = _values[layer] is { } oldV ? cat([oldV, v], 2) : v.clone();
        newK.DetachFromDisposeScope(); newV.DetachFromDisposeScope();
        _keys[layer]?.Dispose(); _values[layer]?.Dispose();
        _keys[layer] = newK; _values[layer] = newV;
        return (newK, newV);
    }

    /// <summary>Keeps only the rows in <paramref name="rows"/> (drops finished sequences).</summary>
    public void Select(Tensor rows)
    {
        for (int i = 0; i < _keys.Length; i++)
        {
            if (_keys[i] is null) continue;
            var k = _keys[i]!.index_select(0, rows).DetachFromDisposeScope();
            var v = _values[i]!.index_select(0, rows).DetachFromDisposeScope();
            _keys[i]!.Dispose(); _values[i]!.Dispose();
            _keys[i] = k; _values[i] = v;
        }
    }

    public void Dispose()
    {
        for (int i = 0; i < _keys.Length; i++) { _keys[i]?.Dispose(); _values[i]?.Dispose(); _keys[i] = _values[i] = null; }
    }
}

/// <summary>Attention masks and position ids shared by the architectures.</summary>
internal static class AttentionMasks
{
    /// <summary>
    /// Additive attention bias <c>[B, 1, T, past+T]</c> (0 where allowed, the dtype's minimum elsewhere) from a key padding
    /// mask <c>[B, past+T]</c> (1 = real token). Returns null when plain causal attention suffices (no padding, no
    /// past, no sliding window), so the fused causal kernel can be used.
    /// </summary>
    public static Tensor? Build(Tensor? keyPadding, long queryLength, long pastLength, int? slidingWindow, ScalarType dtype, Device device)
    {
        long total = pastLength + queryLength;
        bool windowMatters = slidingWindow is int w && total > w;
        if (keyPadding is null && !windowMatters && (pastLength == 0 || queryLength == 1)) return null;
        var q = arange(pastLength, total, ScalarType.Int64, device).unsqueeze(1);   // [T, 1]
        var k = arange(0, total, ScalarType.Int64, device).unsqueeze(0);            // [1, past+T]
        var allowed = k.le(q);
        if (windowMatters) allowed = allowed.logical_and(q.sub(k).lt(slidingWindow!.Value));
        var allowed4 = allowed.unsqueeze(0).unsqueeze(0);                          // [1, 1, T, past+T]
        if (keyPadding is not null) allowed4 = allowed4.logical_and(keyPadding.to(ScalarType.Bool).unsqueeze(1).unsqueeze(2));
        double min = dtype switch { ScalarType.Float16 => -65504.0, ScalarType.BFloat16 => -3.38e38, _ => float.MinValue };
        return zeros(allowed4.shape, dtype, device).masked_fill(allowed4.logical_not(), min);
    }

    /// <summary>Position ids <c>[B, T]</c> for the last <paramref name="queryLength"/> slots: count of real tokens before each slot (pads get 0).</summary>
    public static Tensor Positions(Tensor? keyPadding, long batch, long queryLength, long pastLength, Device device)
    {
        if (keyPadding is null)
            return arange(pastLength, pastLength + queryLength, ScalarType.Int64, device).unsqueeze(0).expand(batch, queryLength);
        var pos = keyPadding.to(ScalarType.Int64).cumsum(1).sub(1).clamp_min(0);
        return pos.narrow(1, pastLength, queryLength);
    }
}

/// <summary>Rotary position embedding (HF "rotate half" convention) with LLaMA-3 and linear scaling.</summary>
internal static class Rotary
{
    /// <summary>Inverse frequencies <c>[D/2]</c> (float32) for the config's theta and scaling.</summary>
    public static Tensor InverseFrequencies(TeacherConfig c)
    {
        int d = c.HeadDim;
        var inv = new float[d / 2];
        for (int i = 0; i < d / 2; i++)
        {
            double f = 1.0 / Math.Pow(c.RopeTheta, 2.0 * i / d);
            if (c.RopeScalingType == "linear") f /= c.RopeScalingFactor;
            else if (c.RopeScalingType == "llama3")
            {
                double lowWave = c.RopeOriginalMaxPositions / c.RopeLowFreqFactor, highWave = c.RopeOriginalMaxPositions / c.RopeHighFreqFactor;
                double wave = 2 * Math.PI / f;
                if (wave > lowWave) f /= c.RopeScalingFactor;
                else if (wave >= highWave)
                {
                    double smooth = (c.RopeOriginalMaxPositions / wave - c.RopeLowFreqFactor) / (c.RopeHighFreqFactor - c.RopeLowFreqFactor);
                    f = (1 - smooth) * f / c.RopeScalingFactor + smooth * f;
                }
            }
            inv[i] = (float)f;
        }
        return tensor(inv);
    }

    /// <summary>cos/sin <c>[B, 1, T, D]</c> for positions <c>[B, T]</c>.</summary>
    public static (Tensor Cos, Tensor Sin) Angles(Tensor invFreq, Tensor positions, ScalarType dtype)
    {
        var freqs = positions.to(ScalarType.Float32).unsqueeze(-1).mul(invFreq);   // [B, T, D/2]
        var emb = cat([freqs, freqs], -1).unsqueeze(1);                            // [B, 1, T, D]
        return (emb.cos().to(dtype), emb.sin().to(dtype));
    }

    /// <summary>x * cos + rotate_half(x) * sin, for x <c>[B, heads, T, D]</c>.</summary>
    public static Tensor Apply(Tensor x, Tensor cos, Tensor sin)
    {
        long half = x.shape[^1] / 2;
        var x1 = x.narrow(-1, 0, half);
        var x2 = x.narrow(-1, half, half);
        var rotated = cat([x2.neg(), x1], -1);
        return x.mul(cos).add(rotated.mul(sin));
    }
}

/// <summary>Weight initialisation drawn on the CPU generator (so a seed gives the same weights on every device).</summary>
internal static class Init
{
    public static void Normal(Tensor p, double std, Generator generator)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        p.copy_(randn(p.shape, ScalarType.Float32, CPU, generator: generator).mul(std));
    }
}
