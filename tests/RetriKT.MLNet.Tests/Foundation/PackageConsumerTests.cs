using System.Reflection;
using System.Diagnostics;
using RetriKT.MLNet.Tests.Infrastructure;

namespace RetriKT.MLNet.Tests.Foundation;

/// <summary>
/// A user's application outside this repository consumes the packed RetriKT.MLNet.Training package (and through it
/// the RetriKT.MLNet runtime package): the training package's buildTransitive targets patch the app's own copy of libLibTorchSharp.so, torch runs, and a model round-trips.
/// </summary>
public class PackageConsumerTests
{
    [Fact]
    public void AnAppReferencingThePackageLoadsTorchSharpAndOurLoaders()
    {
        var work = Directory.CreateTempSubdirectory("retrikt-package-").FullName;
        // The app folder holds its own restore and build output (about 1.1 GB with libtorch): never leave it behind.
        try
        {
            var feed = Path.Combine(work, "feed");
            var version = "0.0.0-test" + DateTime.UtcNow.ToString("yyyyMMddHHmmssfff");
            // Packs what the test run already built (--no-build, same configuration): rebuilding with another Version would
            // overwrite the assemblies other test projects and their child processes load (version 0.1.0.0).
            var configuration = typeof(PackageConsumerTests).Assembly.GetCustomAttribute<AssemblyConfigurationAttribute>()?.Configuration ?? "Release";
            foreach (var package in new[] { "RetriKT.MLNet", "RetriKT.MLNet.Training" }) // the training package depends on the runtime's
                Run("dotnet", ["pack", Path.Combine(SharedData.RepoRoot, "src", package, package + ".csproj"), "-c", configuration, "--no-build",
                    "-o", feed, $"-p:Version={version}"], SharedData.RepoRoot);

            var app = Path.Combine(work, "app");
            Directory.CreateDirectory(app);
            File.WriteAllText(Path.Combine(app, "nuget.config"),
                $"""<?xml version="1.0" encoding="utf-8"?><configuration><packageSources><add key="local" value="{feed}" /></packageSources></configuration>""");
            File.WriteAllText(Path.Combine(app, "app.csproj"), $"""
                <Project Sdk="Microsoft.NET.Sdk">
                  <PropertyGroup><OutputType>Exe</OutputType><TargetFramework>net10.0</TargetFramework><ImplicitUsings>enable</ImplicitUsings></PropertyGroup>
                  <ItemGroup>
                    <PackageReference Include="RetriKT.MLNet.Training" Version="{version}" />
                    <PackageReference Include="TorchSharp-cpu" Version="0.107.0" />
                  </ItemGroup>
                </Project>
                """);
            File.WriteAllText(Path.Combine(app, "Program.cs"), """
                using Microsoft.ML;
                using RetriKT.MLNet;
                using static TorchSharp.torch;
                var t = tensor(new float[] { 1, 2, 3, 4 }, 2, 2);
                Console.WriteLine("matmul-sum=" + t.matmul(t).sum().item<float>());
                var ml = new MLContext();
                var data = ml.Data.LoadFromEnumerable(new[] { new Row { Text = "hello world" }, new Row { Text = "hello there" } });
                ml.Model.Save(ml.RetriKT().TextTokenizer().Fit(data), data.Schema, "m.zip");
                Console.WriteLine("loaded=" + new MLContext().Model.Load("m.zip", out _).GetType().Name);
                public class Row { public string Text { get; set; } = ""; }
                """);
            var build = Run("dotnet", ["build", "-c", "Release"], app);
            if (NeedsPatch()) Assert.Contains("RetriKT: marked GLIBCXX_3.4.32 weak", build);
            var output = Run("dotnet", ["run", "-c", "Release", "--no-build"], app);
            Assert.Contains("matmul-sum=54", output);
            Assert.Contains("loaded=TextTokenizingTransformer", output);
        }
        finally
        {
            Directory.Delete(work, recursive: true);
        }
    }

    private static bool NeedsPatch() => !File.Exists("/usr/lib/x86_64-linux-gnu/libstdc++.so.6")
        || !System.Text.Encoding.ASCII.GetString(File.ReadAllBytes("/usr/lib/x86_64-linux-gnu/libstdc++.so.6")).Contains("GLIBCXX_3.4.32\0");

    private static string Run(string file, string[] args, string directory)
    {
        var start = new ProcessStartInfo(file) { WorkingDirectory = directory, RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in args) start.ArgumentList.Add(a);
        start.Environment["MSBUILDNOINPROCNODE"] = "1";
        using var process = Process.Start(start)!;
        var stderr = process.StandardError.ReadToEndAsync();
        var stdout = process.StandardOutput.ReadToEnd();
        if (!process.WaitForExit(TimeSpan.FromMinutes(5))) { process.Kill(true); Assert.Fail($"{file} {string.Join(' ', args)} timed out"); }
        Assert.True(process.ExitCode == 0, $"{file} {string.Join(' ', args)} failed ({process.ExitCode}):\n{stdout}\n{stderr.Result}");
        return stdout + stderr.Result;
    }
}
