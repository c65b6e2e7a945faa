using TorchSharp.Modules;
using static TorchSharp.torch;

namespace RetriKT.MLNet.Common;

/// <summary>
/// The pretrainers' check after each update: a finite loss does not make the update finite (its gradient can be NaN, or
/// the step overflow), and weights made NaN there would reach a checkpoint or the written model.
/// </summary>
internal static class NonFiniteParameters
{
    /// <summary>The first parameter holding NaN or infinity (with how many of its values do), or null when all are finite; one host sync when they are.</summary>
    public static (string Name, long Count, long Of)? First(IReadOnlyList<(string Name, Parameter Parameter)> parameters)
    {
        using var scope = NewDisposeScope();
        if (stack(parameters.Select(p => p.Parameter.isfinite().all()).ToArray()).all().item<bool>()) return null;
        foreach (var (name, parameter) in parameters)
            if (parameter.isfinite().logical_not().sum().item<long>() is > 0 and var count) return (name, count, parameter.numel());
        return null;
    }
}
