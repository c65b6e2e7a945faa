using RetriKT.Quickstart;

namespace RetriKT.MLNet.Tests.FirstRun;

/// <summary>--quick makes the settings not given smaller; a setting given on the command line is kept, not silently replaced.</summary>
public class QuickstartQuickOptionsTests
{
    private static QuickstartOptions Parsed(params string[] arguments)
    {
        QuickstartOptions? parsed = null;
        int code = QuickstartOptions.Command(o => { parsed = o; return 0; }).Parse(arguments).Invoke();
        Assert.Equal(0, code);
        return parsed!;
    }

    [Fact]
    public void QuickKeepsTheSamplesPerLabelAndPpoStepsGivenOnTheCommandLine()
    {
        // --quick --samples-per-label 64 ran with 12 per label, and --ppo-steps 6 with 2, without a word.
        var given = Parsed("--quick", "--samples-per-label", "64", "--ppo-steps", "6");
        Assert.Equal((64, 6), (given.SamplesPerLabel, given.PpoSteps));
        Assert.Equal(0, Parsed("--quick", "--ppo-steps", "0").PpoSteps);

        var quick = Parsed("--quick");
        Assert.Equal((QuickstartOptions.QuickSamplesPerLabel, QuickstartOptions.QuickPpoSteps), (quick.SamplesPerLabel, quick.PpoSteps));
        var full = Parsed();
        Assert.Equal(((int?)null, 8), (full.SamplesPerLabel, full.PpoSteps));
    }
}
