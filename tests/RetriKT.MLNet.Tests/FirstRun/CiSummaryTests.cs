using System.Diagnostics;
using RetriKT.MLNet.Tests.Infrastructure;

namespace RetriKT.MLNet.Tests.FirstRun;

/// <summary>.ci/run's summary line counts every VSTest result line, including the "Skipped!" line of a project whose tests were all skipped.</summary>
public class CiSummaryTests
{
    [Fact]
    public void SummaryCountsPassedFailedAndSkippedRuns()
    {
        using var folder = new TempDir("retrikt-ci-");
        var log = folder.File("test.log");
        File.WriteAllText(log, """
            Build succeeded.
            Passed!  - Failed:     0, Passed:    95, Skipped:     0, Total:    95, Duration: 3 m 2 s - RetriKT.MLNet.Tests.dll (net10.0)
            Skipped! - Failed:     0, Passed:     0, Skipped:    14, Total:    14, Duration: 1 s - RetriKT.MLNet.Hosting.Tests.dll (net10.0)
            Failed!  - Failed:     2, Passed:    10, Skipped:    34, Total:    46, Duration: 9 s - Other.Tests.dll (net10.0)
            """.Replace("\r", ""));
        var (code, output) = Bash(log);
        Assert.Equal(0, code);
        Assert.Equal("105 passed, 2 failed, 48 skipped", output.Trim());
    }

    [Fact]
    public void ALogWithoutResultLinesFails()
    {
        using var folder = new TempDir("retrikt-ci-");
        var log = folder.File("test.log");
        File.WriteAllText(log, "error MSB1009: Project file does not exist.\n");
        var (code, output) = Bash(log);
        Assert.Equal(1, code);
        Assert.StartsWith("0 passed, 1 failed, 0 skipped", output.Trim());
    }

    private static (int Code, string Output) Bash(string log)
    {
        var start = new ProcessStartInfo("bash") { WorkingDirectory = SharedData.RepoRoot, RedirectStandardOutput = true };
        start.ArgumentList.Add(Path.Combine(".ci", "summarize"));
        start.ArgumentList.Add(log);
        using var p = Process.Start(start)!;
        var output = p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        return (p.ExitCode, output);
    }
}
