using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace RetriKT.MLNet.Common;

/// <summary>
/// AdamW (decoupled weight decay) whose every number reaches torch as a <see cref="Scalar"/> held until the step ends;
/// with no weight decay it is Adam. Parameters come in groups, each with its own weight decay.
/// </summary>
/// <remarks>
/// TorchSharp 0.107's own AdamW passes its coefficients as temporary Scalars (see <see cref="HeldScalars"/>): the GC
/// may finalize one while torch still reads it. Student training died this way in <c>AdamW.step</c>, in
/// <c>addcmul_</c> ("Expected false to be true" in Scalar.h's toFloat) and in a scalar division ("Unknown scalar
/// type"), twice in about four hours of harness training on 2026-12-03, and so did a CI run of the teacher pretrainer
/// on 2026-12-06. The update is the same computation in the same order, each parameter counting its own steps as
/// TorchSharp's does (<c>HeldAdamWTests</c> checks the parameters bit for bit against TorchSharp's AdamW, with groups,
/// and against its Adam without weight decay). The state file is TorchSharp's (<see cref="SaveState"/>), so a
/// pretraining checkpoint written with TorchSharp's AdamW resumes here and the other way round.
/// </remarks>
internal sealed class HeldAdamW : IDisposable
{
    private sealed class Slot(Parameter parameter, double weightDecay)
    {
        public Parameter Parameter { get; } = parameter;
        public double WeightDecay { get; } = weightDecay;
        public Tensor Mean { get; } = zeros_like(parameter).DetachFromDisposeScope();
        public Tensor Square { get; } = zeros_like(parameter).DetachFromDisposeScope();
        public long Steps { get; set; }
    }

    private readonly List<Slot> _slots;
    private readonly (int Size, double WeightDecay)[] _groups;
    private readonly double _beta1, _beta2, _eps, _initialLearningRate;

    /// <summary>One group of parameters, all with <paramref name="weightDecay"/>.</summary>
    public HeldAdamW(IEnumerable<Parameter> parameters, double learningRate, double weightDecay = 0, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8)
        : this([(parameters, weightDecay)], learningRate, beta1, beta2, eps) { }

    /// <summary>Groups of parameters, each with its own weight decay, stepped in the order given.</summary>
    public HeldAdamW(IEnumerable<(IEnumerable<Parameter> Parameters, double WeightDecay)> groups, double learningRate, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8)
    {
        if (!(learningRate >= 0)) throw new ArgumentOutOfRangeException(nameof(learningRate), $"The learning rate must be >= 0, found {learningRate}.");
        var list = groups.Select(g => (Parameters: g.Parameters.ToList(), g.WeightDecay)).ToList();
        foreach (var (_, decay) in list)
            if (!(decay >= 0)) throw new ArgumentOutOfRangeException(nameof(groups), $"The weight decay must be >= 0, found {decay}.");
        LearningRate = _initialLearningRate = learningRate;
        (_beta1, _beta2, _eps) = (beta1, beta2, eps);
        _groups = list.Select(g => (g.Parameters.Count, g.WeightDecay)).ToArray();
        _slots = list.SelectMany(g => g.Parameters.Select(p => new Slot(p, g.WeightDecay))).ToList();
    }

    /// <summary>AdamW whose weight decay applies to matrices (and embeddings) only, not to norms and biases: the pretrainers'.</summary>
    public static HeldAdamW DecayingMatrices(IEnumerable<Parameter> parameters, double learningRate, double beta1, double beta2, double weightDecay)
    {
        var all = parameters.ToList();
        return new HeldAdamW([(all.Where(p => p.dim() >= 2), weightDecay), (all.Where(p => p.dim() < 2), 0)], learningRate, beta1, beta2);
    }

    /// <summary>The rate of the next step (a schedule sets it before each step).</summary>
    public double LearningRate { get; set; }

    /// <summary>Zeroes every parameter's gradient.</summary>
    public void ZeroGrad()
    {
        foreach (var slot in _slots)
            using (var g = slot.Parameter.grad) g?.zero_();
    }

    /// <summary>One AdamW update of every parameter that has a gradient.</summary>
    public void Step()
    {
        double lr = LearningRate;
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        using Scalar beta1 = _beta1.ToScalar(), beta2 = _beta2.ToScalar(), oneMinusBeta1 = (1 - _beta1).ToScalar(),
            oneMinusBeta2 = (1 - _beta2).ToScalar(), eps = _eps.ToScalar();
        foreach (var slot in _slots)
        {
            var grad = slot.Parameter.grad;
            if (grad is null) continue;
            long steps = ++slot.Steps;
            double correction1 = 1 - Math.Pow(_beta1, steps), correction2 = 1 - Math.Pow(_beta2, steps);
            using Scalar decay = (1 - lr * slot.WeightDecay).ToScalar(), sqrtCorrection2 = Math.Sqrt(correction2).ToScalar(),
                negativeStepSize = (-(lr / correction1)).ToScalar();
            var p = slot.Parameter;
            if (slot.WeightDecay != 0) p.mul_(decay); // ×1 is exact: skipping it leaves Adam's numbers as they are
            slot.Mean.mul_(beta1).add_(grad, oneMinusBeta1);
            slot.Square.mul_(beta2).addcmul_(grad, grad, oneMinusBeta2);
            var denominator = slot.Square.sqrt().div_(sqrtCorrection2).add_(eps, HeldScalars.One);
            p.addcdiv_(slot.Mean, denominator, negativeStepSize);
        }
    }

    /// <summary>
    /// Writes the moments and step counts to <paramref name="path"/> in TorchSharp's AdamW state format
    /// (<c>save_state_dict</c> of an AdamW over the same groups), which TorchSharp's AdamW can load.
    /// </summary>
    public void SaveState(string path)
    {
        using var file = StateFile();
        using (no_grad())
            foreach (var (slot, state) in _slots.Zip(file.state_dict().State.Cast<AdamW.State>()))
            {
                state.step = slot.Steps;
                state.exp_avg.copy_(slot.Mean);
                state.exp_avg_sq.copy_(slot.Square);
            }
        file.save_state_dict(path);
    }

    /// <summary>Reads moments and step counts written by <see cref="SaveState"/> or by TorchSharp's AdamW over the same groups.</summary>
    /// <exception cref="InvalidDataException">The file is not an AdamW state of these groups of parameters.</exception>
    public void LoadState(string path)
    {
        using var file = StateFile();
        try { file.load_state_dict(path); }
        catch (Exception e) when (e is ArgumentException or InvalidDataException or EndOfStreamException or System.Runtime.InteropServices.ExternalException)
        {
            throw new InvalidDataException(
                $"{path}: not the AdamW state of this model's parameters (expected {_groups.Length} groups of {string.Join(" + ", _groups.Select(g => g.Size))} parameters): {e.Message}", e);
        }
        var states = file.state_dict().State.Cast<AdamW.State>().ToList();
        // Checked before anything is copied, so a refused file leaves this optimizer as it was.
        if (states.Any(state => state.max_exp_avg_sq is not null))
            throw new InvalidDataException($"{path}: an AMSGrad state, which this optimizer does not keep.");
        using (no_grad())
            foreach (var (slot, state) in _slots.Zip(states))
            {
                slot.Steps = state.step;
                slot.Mean.copy_(state.exp_avg);
                slot.Square.copy_(state.exp_avg_sq);
            }
    }

    // TorchSharp's AdamW over the same groups, never stepped: only the reader and writer of its state format.
    private AdamW StateFile()
    {
        var groups = new List<AdamW.ParamGroup>();
        int at = 0;
        foreach (var (size, weightDecay) in _groups)
        {
            groups.Add(new AdamW.ParamGroup(_slots.GetRange(at, size).Select(s => s.Parameter), new AdamW.Options { weight_decay = weightDecay }));
            at += size;
        }
        // The rate it was made with and the rate of the moment, as TorchSharp's AdamW records them: the same file, byte for byte.
        var file = new AdamW(groups, _initialLearningRate, _beta1, _beta2, _eps);
        foreach (var group in file.ParamGroups) group.LearningRate = LearningRate;
        return file;
    }

    public void Dispose()
    {
        foreach (var slot in _slots) { slot.Mean.Dispose(); slot.Square.Dispose(); }
        _slots.Clear();
    }
}
