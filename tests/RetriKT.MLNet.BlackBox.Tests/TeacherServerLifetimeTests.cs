using Microsoft.Extensions.DependencyInjection;
using RetriKT.MLNet.BlackBox.Tests.Infrastructure;
using RetriKT.MLNet.Teacher;
using RetriKT.MLNet.Tests.Infrastructure;
using RetriKT.TeacherServer;

namespace RetriKT.MLNet.BlackBox.Tests;

/// <summary>RetriKT.TeacherServer hosted in this process (as the blackbox benchmark hosts it): what its disposal releases.</summary>
[Collection(TeacherServerCollection.Name)]
public class TeacherServerLifetimeTests
{
    /// <summary>
    /// The batcher was registered as a ready-made instance, which the host's container never disposes: a server stopped
    /// and disposed in a process that goes on (the benchmark starts two) kept its teacher's weights loaded and its batching
    /// loop running, and went on generating for whoever still held the batcher. Disposing the host now stops the loop,
    /// refuses new work and frees the teacher.
    /// </summary>
    [SharedDataFact]
    public async Task DisposingTheHost_StopsTheBatcherAndFreesTheTeacher()
    {
        var app = TeacherServerApp.Build(["--urls", "http://127.0.0.1:0", "--Logging:LogLevel:Default", "Warning"],
            o => o.ModelPath = TeacherServerProcess.Stories260K);
        await app.StartAsync();
        var batcher = app.Services.GetRequiredService<GenerationBatcher>();
        var teacher = batcher.Teacher;
        var key = new SamplingKey(0, 1, 4, "", null);
        Assert.Single(await batcher.GenerateAsync(batcher.Encode("Once upon a time"), key, 1, 0, default));
        await app.StopAsync();
        await app.DisposeAsync();
        Assert.Equal(nameof(GenerationBatcher), (await Assert.ThrowsAsync<ObjectDisposedException>(() => batcher.GenerateAsync(batcher.Encode("Once"), key, 1, 0, default))).ObjectName);
        Assert.Equal(nameof(TeacherModel), Assert.Throws<ObjectDisposedException>(() => teacher.ParameterCount).ObjectName);
    }
}
