using System.Diagnostics;

namespace RetriKT.MLNet.Tests.Infrastructure;

/// <summary>
/// Runs a sample app as a user would, in a real second process: <c>dotnet &lt;app&gt;.dll args</c> from the temp folder
/// (never the repository), both streams captured, killed and failed after a bound. Linked into the other test projects.
/// </summary>
public static class ChildProcess
{
    /// <summary>Runs <paramref name="appDll"/> (a file name next to the test assembly, or a full path) and returns its exit code and streams.</summary>
    public static (int Code, string Output, string Error) RunApp(string appDll, IEnumerable<string> arguments, int timeoutSeconds = 60)
    {
        using var process = Start(appDll, arguments);
        var output = process.StandardOutput.ReadToEndAsync();
        var error = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(TimeSpan.FromSeconds(timeoutSeconds)))
        {
            process.Kill(entireProcessTree: true);
            Assert.Fail($"{appDll} {string.Join(' ', process.StartInfo.ArgumentList.Skip(1))}: still running after {timeoutSeconds} s");
        }
        return (process.ExitCode, output.Result, error.Result);
    }

    /// <summary>
    /// Starts <paramref name="appDll"/> as <see cref="RunApp"/> does, both streams redirected, for a test that talks to the
    /// process while it runs (reads its output, signals it); the caller reads both streams, waits and disposes. With
    /// <paramref name="interruptible"/>, the child starts with SIGINT at its default disposition (<c>env --default-signal=INT</c>,
    /// which execs dotnet in the same process), as a program started from a terminal does: a test host that a
    /// non-interactive shell started in the background has SIGINT ignored, and its children inherit that, so Ctrl-C's
    /// signal would never reach them.
    /// </summary>
    public static Process Start(string appDll, IEnumerable<string> arguments, bool interruptible = false)
    {
        var start = new ProcessStartInfo(interruptible ? "env" : "dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = Path.GetTempPath() };
        if (interruptible) { start.ArgumentList.Add("--default-signal=INT"); start.ArgumentList.Add("dotnet"); }
        start.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, appDll));
        foreach (var a in arguments) start.ArgumentList.Add(a);
        return Process.Start(start)!;
    }

    /// <summary>
    /// Sends <paramref name="signal"/> (<c>TERM</c> as <c>docker stop</c> or systemd do; <c>INT</c> as a terminal's Ctrl-C
    /// does) to <paramref name="process"/> through the system's <c>kill</c> (<see cref="Process.Kill()"/> sends SIGKILL,
    /// which no process can handle).
    /// </summary>
    public static void Signal(Process process, string signal)
    {
        using var kill = Process.Start(new ProcessStartInfo("kill", [$"-{signal}", process.Id.ToString()]))!;
        kill.WaitForExit();
        Assert.True(kill.ExitCode == 0, $"kill -{signal} {process.Id} exited with {kill.ExitCode}");
    }
}
