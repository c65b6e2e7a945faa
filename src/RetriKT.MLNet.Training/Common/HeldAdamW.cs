using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace RetriKT.MLNet.Common;

/// <summary>
/// AdamW (decoupled weight decay) whose every number reaches torch as a <see cref="Scalar"/> held until the step ends;
/// with no weight decay it is Adam.
/// </summary>
/// <remarks>
/// TorchSharp 0.107's own AdamW passes its coefficients as temporary Scalars (see <see cref="HeldScalars"/>): the GC
/// may finalize one while torch still reads it. Student training died this way in <c>AdamW.step</c>, in
/// <c>addcmul_</c> ("Expected false to be true" in Scalar.h's toFloat) and in a scalar division ("Unknown scalar
/// type"), twice in about four hours of harness training on 2026-12-03. The update is the same computation in the same
/// order (<c>HeldAdamWTests</c> checks the parameters bit for bit against TorchSharp's AdamW, and against its Adam
/// without weight decay). The students and the soft-prompt trainer use it.
/// </remarks>
internal sealed class HeldAdamW : IDisposable
{
    private readonly List<(Parameter Parameter, Tensor Mean, Tensor Square)> _state;
    private readonly double _beta1, _beta2, _eps, _weightDecay;
    private long _steps;

    public HeldAdamW(IEnumerable<Parameter> parameters, double learningRate, double weightDecay = 0, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8)
    {
        if (!(learningRate >= 0)) throw new ArgumentOutOfRangeException(nameof(learningRate), $"The learning rate must be >= 0, found {learningRate}.");
        if (!(weightDecay >= 0)) throw new ArgumentOutOfRangeException(nameof(weightDecay), $"The weight decay must be >= 0, found {weightDecay}.");
        LearningRate = learningRate;
        (_beta1, _beta2, _eps, _weightDecay) = (beta1, beta2, eps, weightDecay);
        _state = parameters.Select(p => (p, zeros_like(p).DetachFromDisposeScope(), zeros_like(p).DetachFromDisposeScope())).ToList();
    }

    /// <summary>The rate of the next step (a schedule sets it before each step).</summary>
    public double LearningRate { get; set; }

    /// <summary>Zeroes every parameter's gradient.</summary>
    public void ZeroGrad()
    {
        foreach (var (p, _, _) in _state)
            using (var g = p.grad) g?.zero_();
    }

    /// <summary>One AdamW update of every parameter that has a gradient.</summary>
    public void Step()
    {
        _steps++;
        double lr = LearningRate;
        double correction1 = 1 - Math.Pow(_beta1, _steps), correction2 = 1 - Math.Pow(_beta2, _steps);
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        using Scalar decay = (1 - lr * _weightDecay).ToScalar(), beta1 = _beta1.ToScalar(), beta2 = _beta2.ToScalar(),
            oneMinusBeta1 = (1 - _beta1).ToScalar(), oneMinusBeta2 = (1 - _beta2).ToScalar(), eps = _eps.ToScalar(),
            sqrtCorrection2 = Math.Sqrt(correction2).ToScalar(), negativeStepSize = (-(lr / correction1)).ToScalar();
        foreach (var (p, mean, square) in _state)
        {
            var grad = p.grad;
            if (grad is null) continue;
            if (_weightDecay != 0) p.mul_(decay); // ×1 is exact: skipping it leaves Adam's numbers as they are
            mean.mul_(beta1).add_(grad, oneMinusBeta1);
            square.mul_(beta2).addcmul_(grad, grad, oneMinusBeta2);
            var denominator = square.sqrt().div_(sqrtCorrection2).add_(eps, HeldScalars.One);
            p.addcdiv_(mean, denominator, negativeStepSize);
        }
    }

    public void Dispose()
    {
        foreach (var (_, mean, square) in _state) { mean.Dispose(); square.Dispose(); }
        _state.Clear();
    }
}
