using RetriKT.MLNet.Common;
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

    /// <summary>
    /// Dropout probability applied, in training mode only, to the input embeddings and to each block's attention and
    /// MLP outputs before they join the residual stream. 0 (the default) everywhere except while
    /// <see cref="TeacherPretrainer"/> trains with <see cref="TeacherPretrainerOptions.Dropout"/>; inference never drops.
    /// </summary>
    public double ResidualDropout { get; set; }

    /// <summary>
    /// Where the dropout masks are drawn from (a CPU generator, whatever the module's device: see <see cref="ResidualDrop"/>),
    /// or null for torch's process-wide generator.
    /// <see cref="TeacherPretrainer"/> sets one per step, seeded from the run's seed and the step.
    /// </summary>
    public Generator? DropoutGenerator { get; set; }

    /// <summary>The dropout in effect now: <see cref="ResidualDropout"/> in training mode (otherwise none), drawn from <see cref="DropoutGenerator"/>.</summary>
    protected ResidualDrop ActiveDropout => new(training ? ResidualDropout : 0, DropoutGenerator);

    /// <summary>Fresh random weights (GPT-2/LLaMA-style init: N(0, 0.02), scaled residual projections, unit norms).</summary>
    public abstract void InitializeWeights(Generator generator);
}

/// <summary>Residual dropout as the decoder applies it: probability <paramref name="P"/> (0: none), masks drawn from <paramref name="Generator"/> (null: torch's process-wide one).</summary>
internal readonly record struct ResidualDrop(double P, Generator? Generator)
{
    /// <summary><paramref name="x"/> with dropout applied, or <paramref name="x"/> itself when <see cref="P"/> is 0.</summary>
    public Tensor Apply(Tensor x)
    {
        if (P <= 0) return x;
        if (Generator is null) return nn.functional.dropout(x, P, training: true);
        // What torch's own dropout does on the CPU (noise ~ Bernoulli(1 − p), divided by 1 − p, times x), from a generator
        // of the caller's: the same masks and rounding as nn.functional.dropout after seeding the process-wide generator
        // alike, without touching the application's (and every other thread's) random stream.
        // Off the CPU the mask is drawn on the CPU and moved: TorchSharp 0.107 makes every Generator a CPU one, and libtorch
        // refuses a CPU generator for a CUDA tensor's draw (see Sampler.Draw), which failed pretraining with dropout on a GPU.
        using var keep = (1 - P).ToScalar(); // held across the call (see HeldScalars)
        using var drawn = empty_like(x, device: CPU).bernoulli_(1 - P, Generator);
        using var noise = x.device_type == DeviceType.CPU ? drawn.alias() : drawn.to(x.device);
        noise.div_(keep);
        return x.mul(noise);
    }
}

/// <summary>
/// Per-layer key/value cache, allocated once per generation call for every position the call can reach
/// (<see cref="Capacity"/>) and written in place: a decoding step copies its new keys/values into the next slots and
/// attends over a view of the filled part, so no step allocates or concatenates the whole cache. Owns its tensors
/// (they live outside any dispose scope) until disposed.
/// </summary>
internal sealed class KvCache : IDisposable
{
    private readonly Tensor?[] _keys, _values;   // [B, Hkv, Capacity, D] per layer, allocated on the layer's first append
    private readonly long[] _lengths;

    /// <param name="layers">Decoder layers.</param>
    /// <param name="capacity">Most positions the cache will hold (prefix + prompt + new tokens).</param>
    public KvCache(int layers, long capacity)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(capacity, 1);
        _keys = new Tensor?[layers]; _values = new Tensor?[layers]; _lengths = new long[layers];
        Capacity = capacity;
    }

    /// <summary>Most positions the cache holds.</summary>
    public long Capacity { get; }

    /// <summary>Number of cached positions (slots) so far.</summary>
    public long Length => _lengths[0];

    /// <summary>
    /// Writes this step's keys/values <c>[B, Hkv, T, D]</c> for <paramref name="layer"/> after the cached ones and returns
    /// views <c>[B, Hkv, past+T, D]</c> of everything cached for the layer.
    /// </summary>
    /// <exception cref="InvalidOperationException">The step would overflow <see cref="Capacity"/>.</exception>
    public (Tensor Keys, Tensor Values) Append(int layer, Tensor k, Tensor v)
    {
        long at = _lengths[layer], t = k.shape[2];
        if (at + t > Capacity)
            throw new InvalidOperationException($"KV cache overflow at layer {layer}: {at} cached + {t} new positions exceed its capacity of {Capacity}.");
        if (_keys[layer] is null)
        {
            _keys[layer] = empty(new[] { k.shape[0], k.shape[1], Capacity, k.shape[3] }, k.dtype, k.device).DetachFromDisposeScope();
            _values[layer] = empty(new[] { v.shape[0], v.shape[1], Capacity, v.shape[3] }, v.dtype, v.device).DetachFromDisposeScope();
        }
        var keys = _keys[layer]!; var values = _values[layer]!;
        using (var slotK = keys.narrow(2, at, t)) slotK.copy_(k);
        using (var slotV = values.narrow(2, at, t)) slotV.copy_(v);
        _lengths[layer] = at + t;
        return (keys.narrow(2, 0, at + t), values.narrow(2, 0, at + t));
    }

    /// <summary>Views <c>[B, Hkv, Length, D]</c> of <paramref name="layer"/>'s cached keys/values (the caller disposes them).</summary>
    public (Tensor Keys, Tensor Values) Filled(int layer) =>
        (_keys[layer]!.narrow(2, 0, _lengths[layer]), _values[layer]!.narrow(2, 0, _lengths[layer]));

    public void Dispose()
    {
        for (int i = 0; i < _keys.Length; i++) { _keys[i]?.Dispose(); _values[i]?.Dispose(); _keys[i] = _values[i] = null; }
    }
}

/// <summary>Attention kernels shared by the architectures.</summary>
internal static class Attention
{
    /// <summary>
    /// Attention of one new position per row (a decoding step): <paramref name="q"/> <c>[B, H, 1, D]</c> over the cached
    /// <paramref name="k"/>, <paramref name="v"/> <c>[B, Hkv, S, D]</c> (H a multiple of Hkv; query head h reads kv head
    /// h / (H/Hkv), as HF's repeat_kv), with an optional additive <paramref name="bias"/> <c>[B, 1, 1, S]</c>. Returns
    /// <c>[B, 1, H·D]</c>. The query heads that share a kv head become rows of one product, so grouped-query attention
    /// needs no copy of the cache per step, and the three small products run without the fused kernel's per-call setup
    /// (which dominates at this size).
    /// </summary>
    public static Tensor SingleQuery(Tensor q, Tensor k, Tensor v, Tensor? bias)
    {
        long b = q.shape[0], heads = q.shape[1], d = q.shape[3], kvHeads = k.shape[1];
        using var scale = (1.0 / Math.Sqrt(d)).ToScalar();                       // held across the call (see HeldScalars)
        var grouped = q.reshape(b, kvHeads, heads / kvHeads, d);                  // [B, Hkv, G, D]
        var scores = grouped.matmul(k.transpose(2, 3)).mul_(scale);               // [B, Hkv, G, S]
        if (bias is not null) scores.add_(bias, HeldScalars.One);
        return scores.softmax(-1).matmul(v).reshape(b, 1, heads * d);
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
        var q = HeldScalars.Arange(pastLength, total, ScalarType.Int64, device).unsqueeze(1);   // [T, 1]
        var k = HeldScalars.Arange(total, ScalarType.Int64, device).unsqueeze(0);               // [1, past+T]
        var allowed4 = k.le(q).unsqueeze(0).unsqueeze(0);                          // [1, 1, T, past+T]
        if (windowMatters)
        {
            using var window = slidingWindow!.Value.ToScalar();
            // The window spans positions, not slots: the padding between a soft prompt and a short row's prompt takes no
            // position, so counting its slots cut the row's view of the soft prompt by its neighbours' lengths.
            Tensor distance;                                                       // [1 or B, T, past+T]
            if (keyPadding is null) distance = q.sub(k).unsqueeze(0);
            else
            {
                var counted = keyPadding.to(ScalarType.Int64).cumsum(1);           // real slots up to each slot
                distance = counted.narrow(1, pastLength, queryLength).unsqueeze(2).sub(counted.unsqueeze(1));
            }
            allowed4 = allowed4.logical_and(distance.lt(window).unsqueeze(1));
        }
        if (keyPadding is not null) allowed4 = allowed4.logical_and(keyPadding.to(ScalarType.Bool).unsqueeze(1).unsqueeze(2));
        double min = dtype switch { ScalarType.Float16 => -65504.0, ScalarType.BFloat16 => -3.38e38, _ => float.MinValue };
        // An explicit Scalar kept alive across the native call (see HeldScalars): an RTE extraction died in masked_fill
        // with "Scalar.h: Expected false to be true", torch's unknown-tag check.
        using var fill = min.ToScalar();
        return zeros(allowed4.shape, dtype, device).masked_fill(allowed4.logical_not(), fill);
    }

    /// <summary>Position ids <c>[B, T]</c> for the last <paramref name="queryLength"/> slots: count of real tokens before each slot (pads get 0).</summary>
    public static Tensor Positions(Tensor? keyPadding, long batch, long queryLength, long pastLength, Device device)
    {
        if (keyPadding is null)
            return HeldScalars.Arange(pastLength, pastLength + queryLength, ScalarType.Int64, device).unsqueeze(0).expand(batch, queryLength);
        var pos = keyPadding.to(ScalarType.Int64).cumsum(1).sub(HeldScalars.One).clamp_min(HeldScalars.Zero);
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

    /// <summary>
    /// cos and sign-folded sin tables <c>[N, D]</c> for positions 0..N-1: row p is cos/sin of p·invFreq repeated over
    /// both halves, the sin table's first half negated so that <see cref="Apply"/> needs no negation or concatenation.
    /// The values equal computing each position's angles on the fly (same float32 products, then the dtype cast).
    /// </summary>
    public static (Tensor Cos, Tensor SinSigned) Tables(Tensor invFreq, long positions, ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        var freqs = HeldScalars.Arange(positions, ScalarType.Float32, invFreq.device).unsqueeze(-1).mul(invFreq);   // [N, D/2]
        var emb = cat([freqs, freqs], -1);                                                              // [N, D]
        var sin = emb.sin();
        long half = freqs.shape[1];
        var signed = cat([sin.narrow(-1, 0, half).neg(), sin.narrow(-1, half, half)], -1);
        return (emb.cos().to(dtype).MoveToOuterDisposeScope(), signed.to(dtype).MoveToOuterDisposeScope());
    }

    /// <summary>cos/sin <c>[B, 1, T, D]</c> for positions <c>[B, T]</c>, looked up in <see cref="Tables"/>.</summary>
    public static (Tensor Cos, Tensor SinSigned) Angles(Tensor cosTable, Tensor sinSignedTable, Tensor positions)
    {
        long b = positions.shape[0], t = positions.shape[1], d = cosTable.shape[1];
        var flat = positions.reshape(-1);
        return (cosTable.index_select(0, flat).view(b, 1, t, d), sinSignedTable.index_select(0, flat).view(b, 1, t, d));
    }

    /// <summary>
    /// x·cos + rotate_half(x)·sin for x <c>[B, heads, T, D]</c>, where rotate_half(x) = [−x₂, x₁]: rolling x by half gives
    /// [x₂, x₁] and the sign sits in <paramref name="sinSigned"/> (−x₂·s equals x₂·(−s) exactly).
    /// </summary>
    public static Tensor Apply(Tensor x, Tensor cos, Tensor sinSigned) =>
        x.mul(cos).add_(x.roll(x.shape[^1] / 2, -1).mul_(sinSigned), HeldScalars.One);
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
