using System.Diagnostics;
using RetriKT.MLNet.Tests.Infrastructure;

namespace RetriKT.MLNet.Hosting.Tests;

/// <summary>
/// The commands the README and docs tell a new user to type, run from the repository root by
/// <c>tests/docs/documented-commands.sh</c> (against the samples this test run built).
/// </summary>
public class DocumentedCommandsTests
{
    [SharedDataFact]
    public void DocumentedCommandsWorkFromTheRepositoryRoot()
    {
        // bin/<Configuration>/net10.0: the samples were built with the same configuration (project references).
        var configuration = new DirectoryInfo(AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar)).Parent!.Name;
        var start = new ProcessStartInfo("bash") { WorkingDirectory = SharedData.RepoRoot, RedirectStandardOutput = true, RedirectStandardError = true };
        start.ArgumentList.Add(Path.Combine("tests", "docs", "documented-commands.sh"));
        start.ArgumentList.Add(configuration);
        using var process = Process.Start(start)!;
        var output = process.StandardOutput.ReadToEndAsync();
        var error = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(TimeSpan.FromMinutes(4)))
        {
            process.Kill(entireProcessTree: true);
            Assert.Fail("documented-commands.sh still running after 4 minutes");
        }
        Assert.True(process.ExitCode == 0, $"exit {process.ExitCode}\n{output.Result}\n{error.Result}");
        Assert.Contains("documented commands: ok", output.Result);
    }
}
