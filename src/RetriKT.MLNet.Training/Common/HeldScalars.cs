using TorchSharp;

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
/// </remarks>
internal static class HeldScalars
{
    public static readonly Scalar One = 1.ToScalar();
    public static readonly Scalar FloatMin = float.MinValue.ToScalar();
    public static readonly Scalar NegativeInfinity = float.NegativeInfinity.ToScalar();
}
