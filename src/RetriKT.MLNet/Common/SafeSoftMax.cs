using System.Numerics.Tensors;

namespace RetriKT.MLNet.Common;

/// <summary>
/// Softmax shifted by the maximum, as torch computes it. <see cref="TensorPrimitives.SoftMax(ReadOnlySpan{float}, Span{float})"/>
/// exponentiates its inputs as they are, so any input above ~88.7 overflows float32 to infinity and the result is NaN
/// (an attention score or a head logit of 100 is enough); the runtime's inference must give what training computed.
/// </summary>
internal static class SafeSoftMax
{
    /// <summary>destination ← softmax(x); x and destination may be the same span. A NaN or +∞ input gives NaN.</summary>
    public static void Compute(ReadOnlySpan<float> x, Span<float> destination)
    {
        if (x.Length == 0) return;
        float max = TensorPrimitives.Max(x);
        TensorPrimitives.Subtract(x, max, destination);
        TensorPrimitives.SoftMax(destination, destination);
    }
}
