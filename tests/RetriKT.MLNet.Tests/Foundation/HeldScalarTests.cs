using RetriKT.MLNet.Common;
using TorchSharp;
using static TorchSharp.torch;

namespace RetriKT.MLNet.Tests.Foundation;

/// <summary>
/// TorchSharp 0.107 frees a temporary Scalar in its finalizer, and the GC may run that while torch still reads the
/// Scalar: with plain numbers (<c>x.pow(2).mul(0.5).add_(1e-5)</c>) this loop dies within seconds in torch's Scalar
/// tag check (measured; it takes the test host down, so that variant is not kept here). Held scalars, alpha
/// included, must survive the same collector pressure.
/// </summary>
public class HeldScalarTests
{
    private static readonly Scalar Two = 2.ToScalar(), Half = 0.5.ToScalar(), Eps = 1e-5.ToScalar();

    [Fact]
    public void HeldScalarsSurviveACollectorRunningBesideTheTorchCalls()
    {
        using var stop = new CancellationTokenSource();
        var collector = new Thread(() => { while (!stop.IsCancellationRequested) { GC.Collect(); GC.WaitForPendingFinalizers(); } });
        collector.Start();
        double sum = 0;
        try
        {
            using var x = ones(64, 256);
            for (int i = 0; i < 30_000; i++)
            {
                using var scope = NewDisposeScope();
                var y = x.pow(Two).mul(Half).add_(Eps, HeldScalars.One).mul_(HeldScalars.One);
                if (i % 10_000 == 0) sum += y.mean().item<float>();
            }
        }
        finally { stop.Cancel(); collector.Join(); }
        Assert.Equal(3 * (0.5 + 1e-5), sum, 4);
    }
}
