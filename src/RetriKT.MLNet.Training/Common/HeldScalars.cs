using TorchSharp;
using static TorchSharp.torch;

namespace RetriKT.MLNet.Common;

/// <summary>
/// Scalars held for the life of the process, for torch calls on hot paths.
/// </summary>
/// <remarks>
/// TorchSharp 0.107 turns a number passed to a tensor method into a temporary <see cref="Scalar"/> with a finalizer,
/// which no dispose scope holds. Some methods also make one of their own, such as <c>add_(other)</c>'s default alpha of 1.
/// Once torch has the temporary's handle, the GC may finalize it while torch still reads it, and the call fails with
/// torch's "unknown scalar tag" check (Scalar.h, in toFloat or equal) or damages the heap. A probe showed it:
/// <c>x.pow(2).mul(0.5).add_(1e-5)</c> in a loop, with a second thread running GC.Collect, died within 2 s. The same
/// loop with every Scalar held, alpha included, ran 200,000 iterations clean. Harness lanes and a CI test died this way
/// on the training machine. Pass these, and give alpha explicitly, where a call runs often.
/// <para>
/// The calls that make their own temporaries in 0.107: <c>add</c>/<c>add_</c> without alpha (tensor or scalar
/// operand, and so the <c>+</c> operator and <c>number − tensor</c>), <c>square()</c> (it is <c>pow(2)</c>),
/// <c>arange</c> without a step, and every operator with a number operand. <c>sub</c>/<c>sub_</c> take no alpha and
/// make none. Each member keeps the C# type the code passed before (an int stays an int), so results are unchanged.
/// </para>
/// </remarks>
internal static class HeldScalars
{
    /// <summary>0 (int).</summary>
    public static readonly Scalar Zero = 0.ToScalar();

    /// <summary>1 (int): the alpha of <c>add</c>/<c>add_</c>, as TorchSharp's overloads without alpha pass it.</summary>
    public static readonly Scalar One = 1.ToScalar();

    /// <summary>2 (int): <c>pow(Two)</c> is what TorchSharp's <c>square()</c> computes.</summary>
    public static readonly Scalar Two = 2.ToScalar();

    /// <summary>3 (int).</summary>
    public static readonly Scalar Three = 3.ToScalar();

    /// <summary>0.5 (double).</summary>
    public static readonly Scalar Half = 0.5.ToScalar();

    /// <summary>1.0 (double), where the code adds 1.0 rather than 1.</summary>
    public static readonly Scalar OneDouble = 1.0.ToScalar();

    /// <summary>true: a bool tensor's fill value.</summary>
    public static readonly Scalar True = true.ToScalar();

    /// <summary>float.MinValue (float): the Hugging Face additive mask at padding.</summary>
    public static readonly Scalar FloatMin = float.MinValue.ToScalar();

    /// <summary>−∞ (float): logits a sampler removes.</summary>
    public static readonly Scalar NegativeInfinity = float.NegativeInfinity.ToScalar();

    /// <summary>−1e9 (float): the tiny student's additive attention bias at padding.</summary>
    public static readonly Scalar MinusOneBillion = (-1e9f).ToScalar();

    /// <summary>0.044715 (double): the cubic coefficient of GELU's tanh approximation.</summary>
    public static readonly Scalar GeluCubicCoefficient = 0.044715.ToScalar();

    /// <summary>√(2/π) (double): the scale inside GELU's tanh approximation.</summary>
    public static readonly Scalar SqrtTwoOverPi = Math.Sqrt(2.0 / Math.PI).ToScalar();

    /// <summary>0.01 and 2.0 (double): the bounds the retrieval temperature τ is clamped to.</summary>
    public static readonly Scalar MinTemperature = 0.01.ToScalar(), MaxTemperature = 2.0.ToScalar();

    /// <summary>1e-8 (float): the floor of probabilities before their log (distillation and tuning losses).</summary>
    public static readonly Scalar ProbabilityFloor = 1e-8f.ToScalar();

    /// <summary>1e-8 (double): the variance epsilon of PPO's advantage whitening.</summary>
    public static readonly Scalar WhitenEpsilon = 1e-8.ToScalar();

    /// <summary>1e-9 (double): the floor of mean pooling's token count (sentence-transformers' clamp).</summary>
    public static readonly Scalar PoolingCountFloor = 1e-9.ToScalar();

    /// <summary>1e-6 (float): the floor of a weighted loss's weight sum.</summary>
    public static readonly Scalar WeightSumFloor = 1e-6f.ToScalar();

    /// <summary>
    /// <c>torch.arange(stop)</c> as TorchSharp computes it (start 0, step 1, both int), with the held start and step and
    /// <paramref name="stop"/> held across the call: TorchSharp's overloads without a step make temporaries.
    /// </summary>
    public static Tensor Arange(long stop, ScalarType dtype, Device device)
    {
        using var end = stop.ToScalar();
        return arange(Zero, end, One, dtype, device);
    }

    /// <summary><c>torch.arange(start, stop)</c> (step 1), the bounds held across the call (see <see cref="Arange(long, ScalarType, Device)"/>).</summary>
    public static Tensor Arange(long start, long stop, ScalarType dtype, Device device)
    {
        using Scalar from = start.ToScalar(), end = stop.ToScalar();
        return arange(from, end, One, dtype, device);
    }
}
