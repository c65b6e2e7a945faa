using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.Extensions.Logging;

namespace RetriKT.MLNet.BlackBox.Tests.Infrastructure;

/// <summary>A real Kestrel app on 127.0.0.1 with a free port and no logging, for a test to map an endpoint's answers on.</summary>
internal static class LocalEndpoint
{
    /// <summary>The app, not yet started: map its routes, then <c>StartAsync</c> it (its address is then in <c>Urls</c>).</summary>
    public static WebApplication Create()
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.WebHost.UseUrls("http://127.0.0.1:0");
        builder.Logging.ClearProviders();
        return builder.Build();
    }
}
