using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using TorchSharp;
using static TorchSharp.torch;
using Tensor = TorchSharp.torch.Tensor;   // not System.Numerics.Tensors.Tensor

namespace RetriKT.MLNet.Teacher;

/// <summary>
/// The decoding steps of a LLaMA-family teacher on the CPU in plain C# (one new position per row, a small batch
/// streaming the weights once per step), used by <see cref="TeacherModel.Generate"/> after the prompt's prefill on
/// torch. At teacher sizes a torch step is dozens of small kernels per layer whose per-call cost outweighs the
/// arithmetic; here a step is a loop over the weights. Same maths as <see cref="LlamaForCausalLM.Decode"/> with a
/// <see cref="KvCache"/>: RMSNorm, rotate-half rotary from the same tables (<see cref="Rotary.Tables"/>), grouped-query
/// attention over the cache with the padding/window rule of <see cref="AttentionMasks.Build"/>, SwiGLU, tied or untied
/// head. Logits agree with torch's to float rounding (summation order), not bit for bit.
/// <para>
/// Weights are read in place from the parameters' own storage (float32, contiguous, CPU), looked up once per
/// <see cref="TeacherModel.Generate"/> call: there is no copy to go stale, so nothing needs invalidating when training
/// (TeacherPretrainer's optimizer steps, a checkpoint load) changes the weights between calls, and no second copy of
/// a large teacher is held. A Generate call runs under no_grad and nothing mutates the weights during it.
/// </para>
/// <para>The key/value cache is managed memory sized once per call: the prefill's keys/values are copied in from the
/// torch cache (<see cref="AdoptPrefill"/>), and each step appends one slot per row.</para>
/// </summary>
internal sealed unsafe class ManagedLlamaDecoder
{
    /// <summary>
    /// Most rows served. A step streams the weights once for all rows; on the bench model at 1 torch thread the managed
    /// step stayed ahead of torch's up to batch 32 (loaded box, CPU time), and 16 covers the extractor's default batch
    /// (16) and PPO's (8). Larger batches stay on torch, whose GEMM blocks over rows and weights and uses its threads.
    /// </summary>
    public const int MaxBatch = 16;

    // The kernels compile straight to optimised code: tiered compilation would first run them unoptimised (Vector<T>
    // without inlining), which made the first few hundred decoding steps of a process several times slower than torch's
    // (a PPO step's rollout at 0.3 s against 0.07 s in the stories260K bench before this).
    private const MethodImplOptions Hot = MethodImplOptions.AggressiveOptimization;

    // One weight matrix [Rows, Cols] (torch Linear layout: out × in) and its optional bias, read in place.
    private readonly record struct Matrix(nint Data, int Rows, int Cols, nint Bias);

    private readonly record struct Layer(nint InputNorm, Matrix Q, Matrix K, Matrix V, Matrix O, nint PostNorm, Matrix Gate, Matrix Up, Matrix Down);

    private readonly TeacherConfig _config;
    private readonly int _batch, _capacity, _hidden, _heads, _kvHeads, _headDim, _inner;
    private readonly float _eps, _scale;
    private readonly Layer[] _layers;
    private readonly nint _embedding, _finalNorm;
    private readonly Matrix _head;
    private readonly float[] _cos, _sinSigned;            // [capacity, D]: the torch path's rotary tables
    private readonly float[][] _keys, _values;            // per layer [B, Hkv, capacity, D]
    private readonly float[] _x, _normed, _q, _k, _v, _attention, _delta, _gate, _up, _activated, _scores;
    private readonly int[] _positions, _padStart, _padEnd; // per row: next position id; pad slots [start, end)
    private int _length;                                   // filled cache slots (the same for every row)

    /// <summary>
    /// A decoder for <paramref name="batch"/> rows and <paramref name="capacity"/> slots over <paramref name="module"/>'s
    /// parameters, or null where this path does not apply (not LLaMA, not float32 contiguous CPU weights, a batch above
    /// <see cref="MaxBatch"/>, a weight or a layer's cache past 2G floats): the caller then decodes with torch.
    /// </summary>
    public static ManagedLlamaDecoder? TryCreate(CausalLMModule module, int batch, long capacity)
    {
        var c = module.Config;
        if (c.Architecture != TeacherArchitecture.Llama || batch > MaxBatch || (long)batch * c.NumKeyValueHeads * capacity * c.HeadDim > Array.MaxLength) return null;
        var parameters = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        foreach (var (name, p) in module.named_parameters())
        {
            if (p.device_type != DeviceType.CPU || p.dtype != ScalarType.Float32 || !p.is_contiguous() || p.numel() > int.MaxValue / sizeof(float)) return null;
            parameters[name] = p;
        }
        return new ManagedLlamaDecoder(c, parameters, batch, (int)capacity);
    }

    private ManagedLlamaDecoder(TeacherConfig c, Dictionary<string, Tensor> parameters, int batch, int capacity)
    {
        _config = c; _batch = batch; _capacity = capacity;
        _hidden = c.HiddenSize; _heads = c.NumHeads; _kvHeads = c.NumKeyValueHeads; _headDim = c.HeadDim; _inner = c.IntermediateSize;
        _eps = (float)c.NormEpsilon;
        _scale = (float)(1.0 / Math.Sqrt(_headDim));   // as Attention.SingleQuery's scalar, applied in float32
        nint Vector(string name) => Address(parameters[name]);
        Matrix Linear(string name) => new(Address(parameters[name + ".weight"]), (int)parameters[name + ".weight"].shape[0],
            (int)parameters[name + ".weight"].shape[1], parameters.TryGetValue(name + ".bias", out var b) ? Address(b) : 0);
        _layers = new Layer[c.NumLayers];
        for (int i = 0; i < c.NumLayers; i++)
        {
            string l = $"model.layers.{i}.";
            _layers[i] = new Layer(Vector(l + "input_layernorm.weight"), Linear(l + "self_attn.q_proj"), Linear(l + "self_attn.k_proj"),
                Linear(l + "self_attn.v_proj"), Linear(l + "self_attn.o_proj"), Vector(l + "post_attention_layernorm.weight"),
                Linear(l + "mlp.gate_proj"), Linear(l + "mlp.up_proj"), Linear(l + "mlp.down_proj"));
        }
        _embedding = Vector("model.embed_tokens.weight");
        _finalNorm = Vector("model.norm.weight");
        _head = c.TieWordEmbeddings ? new Matrix(_embedding, c.VocabSize, _hidden, 0) : Linear("lm_head");

        using (var scope = NewDisposeScope())
        {
            var (cos, sin) = Rotary.Tables(Rotary.InverseFrequencies(c), capacity, ScalarType.Float32);
            _cos = cos.data<float>().ToArray(); _sinSigned = sin.data<float>().ToArray();
        }
        long cacheFloats = (long)batch * _kvHeads * capacity * _headDim;
        _keys = new float[c.NumLayers][]; _values = new float[c.NumLayers][];
        for (int i = 0; i < c.NumLayers; i++) { _keys[i] = new float[cacheFloats]; _values[i] = new float[cacheFloats]; }
        _x = new float[batch * _hidden]; _normed = new float[batch * _hidden]; _delta = new float[batch * _hidden];
        _q = new float[batch * _heads * _headDim]; _attention = new float[batch * _heads * _headDim];
        _k = new float[batch * _kvHeads * _headDim]; _v = new float[batch * _kvHeads * _headDim];
        _gate = new float[batch * _inner]; _up = new float[batch * _inner]; _activated = new float[batch * _inner];
        _scores = new float[capacity];
        _positions = new int[batch]; _padStart = new int[batch]; _padEnd = new int[batch];
    }

    // The parameter's storage. Valid while the parameter lives; the weights never move during a Generate call.
    private static nint Address(Tensor p) => (nint)Unsafe.AsPointer(ref MemoryMarshal.GetReference(p.bytes));

    /// <summary>
    /// Takes over the prefill's keys/values from <paramref name="cache"/> (every slot filled: its capacity is the
    /// prefill's length) for rows laid out as [prefix][left padding][prompt], <paramref name="promptLengths"/> real
    /// tokens each after <paramref name="prefixLength"/> prefix slots. Positions count real slots only, as
    /// <see cref="AttentionMasks.Positions"/> does, and the padding slots stay invisible to every later step.
    /// </summary>
    public void AdoptPrefill(KvCache cache, int prefixLength, IReadOnlyList<int> promptLengths)
    {
        int filled = (int)cache.Length, longest = filled - prefixLength, rowFloats = filled * _headDim;
        for (int layer = 0; layer < _layers.Length; layer++)
        {
            var (keys, values) = cache.Filled(layer);
            using (keys) using (values)
            using (var k = keys.contiguous()) using (var v = values.contiguous())
            {
                var kSource = MemoryMarshal.Cast<byte, float>(k.bytes);
                var vSource = MemoryMarshal.Cast<byte, float>(v.bytes);
                for (int row = 0; row < _batch * _kvHeads; row++)   // [B·Hkv, filled, D] → [B·Hkv, capacity, D]
                {
                    kSource.Slice(row * rowFloats, rowFloats).CopyTo(_keys[layer].AsSpan(row * _capacity * _headDim));
                    vSource.Slice(row * rowFloats, rowFloats).CopyTo(_values[layer].AsSpan(row * _capacity * _headDim));
                }
            }
        }
        _length = filled;
        for (int b = 0; b < _batch; b++)
        {
            _positions[b] = prefixLength + promptLengths[b];
            _padStart[b] = prefixLength; _padEnd[b] = prefixLength + longest - promptLengths[b];
        }
    }

    /// <summary>
    /// Runs one position per row for <paramref name="ids"/> and returns the next-token logits <c>[B, V]</c> (float32, in
    /// the current dispose scope) for torch's sampler.
    /// </summary>
    [MethodImpl(Hot)]
    public Tensor Step(ReadOnlySpan<long> ids)
    {
        if (_length >= _capacity) throw new InvalidOperationException($"Managed KV cache overflow: {_capacity} slots are filled.");
        int h = _hidden;
        for (int b = 0; b < _batch; b++)
            new ReadOnlySpan<float>((float*)_embedding + ids[b] * h, h).CopyTo(_x.AsSpan(b * h, h));
        for (int i = 0; i < _layers.Length; i++)
        {
            ref readonly var layer = ref _layers[i];
            RmsNorm(_x, layer.InputNorm, _normed);
            Linear(layer.Q, _normed, _q); Linear(layer.K, _normed, _k); Linear(layer.V, _normed, _v);
            Attend(i);
            Linear(layer.O, _attention, _delta);
            AddInPlace(_x, _delta);
            RmsNorm(_x, layer.PostNorm, _normed);
            Linear(layer.Gate, _normed, _gate); Linear(layer.Up, _normed, _up);
            SwiGlu(_gate, _up, _activated);
            Linear(layer.Down, _activated, _delta);
            AddInPlace(_x, _delta);
        }
        RmsNorm(_x, _finalNorm, _normed);
        var logits = empty(new long[] { _batch, _config.VocabSize }, ScalarType.Float32);
        Linear(_head, _normed, MemoryMarshal.Cast<byte, float>(logits.bytes));
        _length++;
        for (int b = 0; b < _batch; b++) _positions[b]++;
        return logits;
    }

    // RMSNorm per row: w · x / sqrt(mean(x²) + eps), as RmsNorm.forward in float32.
    [MethodImpl(Hot)]
    private void RmsNorm(float[] x, nint weight, float[] output)
    {
        int h = _hidden;
        var w = new ReadOnlySpan<float>((float*)weight, h);
        for (int b = 0; b < _batch; b++)
        {
            var row = x.AsSpan(b * h, h);
            var normed = output.AsSpan(b * h, h);
            float inverse = 1f / MathF.Sqrt(SumOfSquares(row) / h + _eps);
            for (int i = 0; i < h; i++) normed[i] = w[i] * (row[i] * inverse);
        }
    }

    /// <summary>
    /// Workers a large matrix is split across (rows in blocks of four; each output is computed the same way whatever
    /// the split, so results do not depend on it). Default: torch's intra-op thread count, the application's choice.
    /// </summary>
    internal int Threads { get; set; } = torch.get_num_threads();

    /// <summary>
    /// Smallest matrix (floats) worth splitting: 2M floats = 8 MB take ~0.3 ms to stream on one core, against ~10 µs
    /// for a fork/join; at teacher sizes (a few MB per step) every matrix stays on the calling thread.
    /// </summary>
    internal long ParallelMinimumFloats { get; set; } = 1 << 21;

    // y[b] = W·x[b] (+ bias) for every input row b, from x [B, in] into y [B, out].
    [MethodImpl(Hot)]
    private void Linear(in Matrix m, float[] x, Span<float> y)
    {
        fixed (float* xs = x) fixed (float* ys = y)
        {
            int blocks = (m.Rows + 3) / 4, parts = Math.Min(Threads, blocks);
            if (parts <= 1 || (long)m.Rows * m.Cols < ParallelMinimumFloats) { LinearRows(m, xs, ys, 0, m.Rows); return; }
            nint xAddress = (nint)xs, yAddress = (nint)ys;   // a lambda cannot capture pointers; y is pinned until Parallel.For returns
            var matrix = m;
            Parallel.For(0, parts, new ParallelOptions { MaxDegreeOfParallelism = parts }, part =>
                LinearRows(matrix, (float*)xAddress, (float*)yAddress, 4 * (int)((long)blocks * part / parts), Math.Min(matrix.Rows, 4 * (int)((long)blocks * (part + 1) / parts))));
        }
    }

    // Output rows [from, to) of Linear (from a multiple of 4). Four weight rows at a time meet each of the batch's
    // inputs while they sit in L1, so a step streams the weights from memory once whatever the batch; within that,
    // two rows meet four inputs per pass (6 loads per 8 FMAs). TensorPrimitives.Dot per row and input cost twice as
    // much at batch 4: its per-call setup and reduction outweighed a 256-long product.
    [MethodImpl(Hot)]
    private void LinearRows(in Matrix m, float* xs, float* ys, int from, int to)
    {
        int n = m.Cols, rows = m.Rows;
        float* w = (float*)m.Data, bias = (float*)m.Bias;
        int o = from;
        for (; o + 4 <= to; o += 4)
        {
            int b = 0;
            for (; b + 4 <= _batch; b += 4)
            {
                Dot2x4(w + (long)o * n, n, xs + b * n, ys + b * rows + o, rows);
                Dot2x4(w + (long)(o + 2) * n, n, xs + b * n, ys + b * rows + o + 2, rows);
            }
            for (; b < _batch; b++) Dot4(w + (long)o * n, n, xs + b * n, ys + b * rows + o);
        }
        for (; o < to; o++)
            for (int b = 0; b < _batch; b++) ys[b * rows + o] = Dot(w + (long)o * n, xs + b * n, n);
        if (bias != null)
            for (int b = 0; b < _batch; b++)
            {
                var slice = new Span<float>(ys + b * rows + from, to - from);
                AddInPlace(slice, new ReadOnlySpan<float>(bias + from, to - from));
            }
    }

    // The products of rows w[0..3] (each n long, consecutive) with x, into result[0..3].
    [MethodImpl(Hot)]
    private static void Dot4(float* w, int n, float* x, float* result)
    {
        int width = Vector<float>.Count, i = 0;
        Vector<float> a0 = default, a1 = default, a2 = default, a3 = default;
        for (; i + width <= n; i += width)
        {
            var xv = Vector.Load(x + i);
            a0 = Vector.FusedMultiplyAdd(Vector.Load(w + i), xv, a0);
            a1 = Vector.FusedMultiplyAdd(Vector.Load(w + n + i), xv, a1);
            a2 = Vector.FusedMultiplyAdd(Vector.Load(w + 2 * n + i), xv, a2);
            a3 = Vector.FusedMultiplyAdd(Vector.Load(w + 3 * n + i), xv, a3);
        }
        float s0 = Vector.Sum(a0), s1 = Vector.Sum(a1), s2 = Vector.Sum(a2), s3 = Vector.Sum(a3);
        for (; i < n; i++) { s0 += w[i] * x[i]; s1 += w[n + i] * x[i]; s2 += w[2 * n + i] * x[i]; s3 += w[3 * n + i] * x[i]; }
        result[0] = s0; result[1] = s1; result[2] = s2; result[3] = s3;
    }

    // Rows w[0..1] against four consecutive inputs x + j·n (j = 0..3), into result + j·stride: one pass over the two
    // rows serves all four inputs (6 loads per 8 FMAs).
    [MethodImpl(Hot)]
    private static void Dot2x4(float* w, int n, float* x, float* result, int stride)
    {
        int width = Vector<float>.Count, i = 0;
        float* w1 = w + n, x1 = x + n, x2 = x + 2 * n, x3 = x + 3 * n;
        Vector<float> a0 = default, a1 = default, a2 = default, a3 = default, c0 = default, c1 = default, c2 = default, c3 = default;
        for (; i + width <= n; i += width)
        {
            Vector<float> u = Vector.Load(w + i), v = Vector.Load(w1 + i), xv = Vector.Load(x + i);
            a0 = Vector.FusedMultiplyAdd(u, xv, a0); c0 = Vector.FusedMultiplyAdd(v, xv, c0);
            xv = Vector.Load(x1 + i);
            a1 = Vector.FusedMultiplyAdd(u, xv, a1); c1 = Vector.FusedMultiplyAdd(v, xv, c1);
            xv = Vector.Load(x2 + i);
            a2 = Vector.FusedMultiplyAdd(u, xv, a2); c2 = Vector.FusedMultiplyAdd(v, xv, c2);
            xv = Vector.Load(x3 + i);
            a3 = Vector.FusedMultiplyAdd(u, xv, a3); c3 = Vector.FusedMultiplyAdd(v, xv, c3);
        }
        float s0 = Vector.Sum(a0), s1 = Vector.Sum(a1), s2 = Vector.Sum(a2), s3 = Vector.Sum(a3);
        float t0 = Vector.Sum(c0), t1 = Vector.Sum(c1), t2 = Vector.Sum(c2), t3 = Vector.Sum(c3);
        for (; i < n; i++)
        {
            s0 += w[i] * x[i]; s1 += w[i] * x1[i]; s2 += w[i] * x2[i]; s3 += w[i] * x3[i];
            t0 += w1[i] * x[i]; t1 += w1[i] * x1[i]; t2 += w1[i] * x2[i]; t3 += w1[i] * x3[i];
        }
        result[0] = s0; result[stride] = s1; result[2 * stride] = s2; result[3 * stride] = s3;
        result[1] = t0; result[stride + 1] = t1; result[2 * stride + 1] = t2; result[3 * stride + 1] = t3;
    }

    // a·b over n floats, inline: the attention's head-sized products are too short for a library call's setup.
    [MethodImpl(Hot)]
    private static float Dot(float* a, float* b, int n)
    {
        int width = Vector<float>.Count, i = 0;
        Vector<float> sum = default;
        for (; i + width <= n; i += width) sum = Vector.FusedMultiplyAdd(Vector.Load(a + i), Vector.Load(b + i), sum);
        float total = Vector.Sum(sum);
        for (; i < n; i++) total += a[i] * b[i];
        return total;
    }

    // y += p·x over n floats (a value row into a head's output).
    [MethodImpl(Hot)]
    private static void AddScaled(float* y, float* x, float p, int n)
    {
        int width = Vector<float>.Count, i = 0;
        var scale = new Vector<float>(p);
        for (; i + width <= n; i += width) Vector.FusedMultiplyAdd(Vector.Load(x + i), scale, Vector.Load(y + i)).Store(y + i);
        for (; i < n; i++) y[i] += p * x[i];
    }

    // Rotary on this step's q and k, the new key/value into the cache's next slot, then each query head over its kv
    // head's cached slots (head h reads kv head h / (H/Hkv)). A row's padding slots take no part (torch adds the
    // float minimum there, whose exp is 0), nor do slots beyond a sliding window (position distance, as
    // AttentionMasks.Build: a row's padding slots lie inside its span and take no position).
    [MethodImpl(Hot)]
    private void Attend(int layer)
    {
        int d = _headDim, half = d / 2, slot = _length, group = _heads / _kvHeads;
        var keys = _keys[layer]; var values = _values[layer];
        for (int b = 0; b < _batch; b++)
        {
            int first = 0;
            if (_config.SlidingWindow is int window)
            {
                // The window's first slot, or, where that falls before the row's padding ends, as far before it as the
                // padding is long.
                first = slot - window + 1;
                if (first < _padEnd[b]) first = Math.Max(0, first - (_padEnd[b] - _padStart[b]));
            }
            var cos = _cos.AsSpan(_positions[b] * d, d); var sin = _sinSigned.AsSpan(_positions[b] * d, d);
            for (int head = 0; head < _heads; head++) RotateHalf(_q.AsSpan((b * _heads + head) * d, d), cos, sin, half);
            for (int kv = 0; kv < _kvHeads; kv++)
            {
                int at = ((b * _kvHeads + kv) * _capacity + slot) * d;
                var k = _k.AsSpan((b * _kvHeads + kv) * d, d);
                RotateHalf(k, cos, sin, half);
                k.CopyTo(keys.AsSpan(at, d));
                _v.AsSpan((b * _kvHeads + kv) * d, d).CopyTo(values.AsSpan(at, d));
            }
            int padStart = _padStart[b], padEnd = _padEnd[b];
            fixed (float* q = _q, cachedKeys = keys, cachedValues = values, scoreBase = _scores, attention = _attention)
                for (int head = 0; head < _heads; head++)
                {
                    float* kRows = cachedKeys + (long)(b * _kvHeads + head / group) * _capacity * d;
                    float* vRows = cachedValues + (long)(b * _kvHeads + head / group) * _capacity * d;
                    float* qHead = q + (b * _heads + head) * d;
                    for (int s = first; s <= slot; s++)
                        scoreBase[s] = s >= padStart && s < padEnd ? float.NegativeInfinity : Dot(qHead, kRows + s * d, d) * _scale;
                    var scores = _scores.AsSpan(first, slot + 1 - first);
                    Softmax(scores);
                    float* output = attention + (b * _heads + head) * d;
                    new Span<float>(output, d).Clear();
                    for (int s = first; s <= slot; s++)
                        if (s < padStart || s >= padEnd) AddScaled(output, vRows + s * d, scoreBase[s], d);
                }
        }
    }

    // Element-wise helpers in place of TensorPrimitives': its generic kernels start unoptimised under tiered compilation,
    // and only settle at their optimised tier once a process stops compiling new code, so a short run (a PPO step's
    // rollout) took several times torch's time. These compile optimised at once (Hot). Exp is MathF.Exp per element.

    [MethodImpl(Hot)]
    private static void AddInPlace(Span<float> x, ReadOnlySpan<float> y)
    {
        int width = Vector<float>.Count, i = 0;
        for (; i + width <= x.Length; i += width) (new Vector<float>(x[i..]) + new Vector<float>(y[i..])).CopyTo(x[i..]);
        for (; i < x.Length; i++) x[i] += y[i];
    }

    [MethodImpl(Hot)]
    private static float SumOfSquares(ReadOnlySpan<float> x)
    {
        int width = Vector<float>.Count, i = 0;
        Vector<float> sum = default;
        for (; i + width <= x.Length; i += width) { var v = new Vector<float>(x[i..]); sum = Vector.FusedMultiplyAdd(v, v, sum); }
        float total = Vector.Sum(sum);
        for (; i < x.Length; i++) total += x[i] * x[i];
        return total;
    }

    // silu(g)·u = g·σ(g)·u, σ(g) = 1 / (1 + e^-g).
    [MethodImpl(Hot)]
    private static void SwiGlu(ReadOnlySpan<float> gate, ReadOnlySpan<float> up, Span<float> output)
    {
        for (int i = 0; i < output.Length; i++) output[i] = gate[i] / (1f + MathF.Exp(-gate[i])) * up[i];
    }

    // Softmax in place, shifted by the maximum; -∞ (padding) gives 0.
    [MethodImpl(Hot)]
    private static void Softmax(Span<float> scores)
    {
        float max = float.NegativeInfinity, sum = 0;
        foreach (float v in scores) max = MathF.Max(max, v);
        for (int i = 0; i < scores.Length; i++) { scores[i] = MathF.Exp(scores[i] - max); sum += scores[i]; }
        for (int i = 0; i < scores.Length; i++) scores[i] /= sum;
    }

    // x·cos + rotate_half(x)·sin with the sign folded into the table (Rotary.Apply): the same float32 products and sum.
    [MethodImpl(Hot)]
    private static void RotateHalf(Span<float> x, ReadOnlySpan<float> cos, ReadOnlySpan<float> sinSigned, int half)
    {
        Span<float> rotated = stackalloc float[x.Length];
        for (int j = 0; j < half; j++) { rotated[j] = x[j] * cos[j] + x[j + half] * sinSigned[j]; rotated[j + half] = x[j + half] * cos[j + half] + x[j] * sinSigned[j + half]; }
        rotated.CopyTo(x);
    }
}
